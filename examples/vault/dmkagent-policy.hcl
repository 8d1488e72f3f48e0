# dmkagent: least privilege in HashiCorp Vault (KV v2 mounted at secret/).
#
# For the configuration in examples/dmkagent.conf: the DMK passwords of AG1's
# databases at secret/sql/ag1/<db>/dmk.  Replace "sql/ag1" with your prefix;
# one block per prefix.  What each command needs:
#   register, verify, status   read the DMK password and list its versions
#   rotate, recover, run       also write new versions, set their markers
#                              (custom_metadata) and max_versions on the
#                              metadata, and the rotation lease
#   backup (and rotate first)  write the escrowed backups and, on first use,
#                              the generated backup passwords
#   watch, hook serve          as run
# dmkagent never deletes, destroys or lists anything, and needs no sudo.
#
#   vault policy write dmkagent examples/vault/dmkagent-policy.hcl

# The DMK passwords: their values, versions and markers.
path "secret/data/sql/ag1/+/dmk" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/sql/ag1/+/dmk" {
  capabilities = ["create", "read", "update"]
}

# Escrowed backups (<dmk>-backup-cert-..., <dmk>-backup-dmk) and the backup
# passwords generated on first use (<dmk>-backup-password-cert|dmk).
path "secret/data/sql/ag1/+/dmk-backup-*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/sql/ag1/+/dmk-backup-*" {
  capabilities = ["create", "read", "update"]
}

# The rotation lease: one writer per database across hosts.
path "secret/data/dmkagent/leases/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/dmkagent/leases/*" {
  capabilities = ["create", "read", "update"]
}

# Read only: the SQL login's password and the audit key.
path "secret/data/sql/logins/dmkagent" {
  capabilities = ["read"]
}
path "secret/data/dmkagent/audit" {
  capabilities = ["read"]
}

# Token self-management (lookup, renew, revoke at exit) and
# sys/capabilities-self (store check) come with Vault's "default" policy.

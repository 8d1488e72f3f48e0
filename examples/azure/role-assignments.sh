#!/bin/sh
# dmkagent: least privilege in Azure Key Vault (RBAC permission model).
#
# dmkagent reads, writes new versions of, and tags (dmkagent-* markers) the
# DMK password secrets; it creates the escrowed backups
# (<secret>-backup-cert-..., <secret>-backup-dmk), the generated backup
# passwords (<secret>-backup-password-cert|dmk) and the rotation leases
# (dmkagent-lease-<ag>-<db>) on first use.  It never deletes or purges a
# secret and needs no key or certificate permission.
#
# Azure RBAC cannot scope a role to a secret that does not exist yet, so:
#  - "Key Vault Secrets User" (read) is not enough anywhere;
#  - "Key Vault Secrets Officer" on the vault is the simplest grant; better,
#    give dmkagent a vault of its own (these secrets only), or
#  - pre-create every secret above (dmkagent store put, and one run of
#    dmkagent backup) and grant "Key Vault Secrets Officer" per secret.
# Event Grid (dmkagent hook serve) needs nothing from dmkagent's identity.
set -eu
: "${PRINCIPAL:?object id of dmkagent's identity (managed or workload identity)}"
: "${VAULT_ID:?/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME}"

# a vault of dmkagent's own:
az role assignment create --assignee-object-id "$PRINCIPAL" --assignee-principal-type ServicePrincipal \
    --role "Key Vault Secrets Officer" --scope "$VAULT_ID"

# or, per pre-created secret (repeat for each name listed above):
# az role assignment create --assignee-object-id "$PRINCIPAL" --assignee-principal-type ServicePrincipal \
#     --role "Key Vault Secrets Officer" --scope "$VAULT_ID/secrets/sql-ag1-cm-p01-dmk"

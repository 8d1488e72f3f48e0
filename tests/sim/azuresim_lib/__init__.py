"""azuresim: a protocol-faithful Azure Key Vault (secrets) + Entra ID token simulator.

Entry point: tests/sim/azuresim (see tests/sim/README.md, section azuresim).
Modules:
  jwtutil   - base64url/JWT helpers, RS256/PS256/ES256 verification, token minting
  store     - the secret store (versions, soft delete, recovery), persisted as JSON
  util      - config, faults, audit, HTTP plumbing shared by the surfaces
  keyvault  - Key Vault secrets data plane (challenge, RBAC-lite, errors, paging)
  entra     - Entra v2 token endpoint, OIDC discovery, instance discovery, JWKS
  msi       - managed identity endpoints: IMDS, App Service, Azure Arc
  control   - the plain-HTTP control API (faults, grants, stats, audit)
  server    - argument parsing, TLS servers, the ready line
"""

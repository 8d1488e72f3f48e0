"""vaultsim: a protocol-faithful HashiCorp Vault simulator for dmkagent tests.

Standard library plus Debian's python3-cryptography.  See tests/sim/README.md.
"""

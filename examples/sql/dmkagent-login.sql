-- dmkagent-login.sql: the SQL Server login dmkagent connects as, with only
-- the permissions its commands need.  Run it with sqlcmd on EVERY replica
-- (logins and server permissions are per instance; the SID must be the same
-- everywhere so that the database user maps to the login after a failover),
-- then the database part on the primary:
--
--   sqlcmd -S sqlnode1 -E -b -v DMKAGENT_SID="0x1D2F..." -v DB="CM_P01" -i dmkagent-login.sql
--
-- The password is never in this file or on a command line: sqlcmd reads
-- DMKAGENT_PASSWORD from the environment (set it from the store, e.g.
--   DMKAGENT_PASSWORD="$(vault kv get -field=password secret/sql/logins/dmkagent)").
-- Put the same password in the store at the reference login_password names.
--
-- What each command needs (README, "Least privilege"):
--   register, verify, status    VIEW SERVER STATE, VIEW ANY DEFINITION (the AG's
--                               replicas and health, every credential), ALTER ANY
--                               CREDENTIAL and CONTROL on the database
--                               (sp_control_dbmasterkey_password, OPEN MASTER KEY)
--   rotate, recover, run        the same (ALTER MASTER KEY needs CONTROL on the database)
--   backup                      ADMINISTER BULK OPERATIONS (the DMK backup file is
--                               read back with OPENROWSET(BULK ...))
--   backup --restore-test       CREATE ANY DATABASE (a scratch database, dropped after)
--   verify --failover-test, recover when it fails over
--                               ALTER ANY AVAILABILITY GROUP
--   backup --smk                CONTROL SERVER (BACKUP SERVICE MASTER KEY): not granted
--                               here; run it as an administrator if you want it.
:on error exit

USE [master];
GO
CREATE LOGIN [dmkagent] WITH PASSWORD = N'$(DMKAGENT_PASSWORD)', SID = $(DMKAGENT_SID), CHECK_POLICY = ON, CHECK_EXPIRATION = OFF;
GO
GRANT VIEW SERVER STATE TO [dmkagent];
GRANT VIEW ANY DEFINITION TO [dmkagent];
GRANT ALTER ANY CREDENTIAL TO [dmkagent];
GRANT ADMINISTER BULK OPERATIONS TO [dmkagent];
GRANT CREATE ANY DATABASE TO [dmkagent];
GRANT ALTER ANY AVAILABILITY GROUP TO [dmkagent];
GO

-- On the primary only, once per configured database (the user and the grant
-- replicate with the database).
USE [$(DB)];
GO
CREATE USER [dmkagent] FOR LOGIN [dmkagent];
GO
GRANT CONTROL ON DATABASE::[$(DB)] TO [dmkagent];
GO

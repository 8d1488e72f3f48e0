"""SQL Server errors the simulator raises: number -> (severity, template).
Texts from sqlserver-semantics.md (ERR15, ERR0) and tds-notes.md; see README.md."""

ERRORS = {
    102: (15, "Incorrect syntax near '{0}'."),
    103: (15, "The identifier that starts with '{0}' is too long. Maximum length is 128."),
    201: (16, "Procedure or function '{0}' expects parameter '{1}', which was not supplied."),
    207: (16, "Invalid column name '{0}'."),
    208: (16, "Invalid object name '{0}'."),
    209: (16, "Ambiguous column name '{0}'."),
    245: (16, "Conversion failed when converting the nvarchar value '{0}' to data type int."),
    300: (14, "{0} permission was denied on object '{1}', database '{2}'."),
    262: (14, "{0} permission denied in database '{1}'."),
    137: (15, "Must declare the scalar variable \"{0}\"."),
    195: (15, "'{0}' is not a recognized built-in function name."),
    916: (14, "The server principal \"{0}\" is not able to access the database \"{1}\" under the current "
               "security context."),
    1038: (15, "An object or column name is missing or empty. For SELECT INTO statements, verify each column has a "
               "name. For other statements, look for empty alias names. Aliases defined as \"\" or [] are not "
               "allowed. Change the alias to a valid name."),
    1801: (16, "Database '{0}' already exists. Choose a different database name."),
    3701: (11, "Cannot drop the database '{0}', because it does not exist or you do not have permission."),
    3702: (16, "Cannot drop database \"{0}\" because it is currently in use."),
    3708: (16, "Cannot drop the database '{0}' because it is a system database."),
    3752: (16, "The database '{0}' is currently joined to an availability group.  Before you can drop the "
               "database, you need to remove it from the availability group."),
    911: (16, "Database '{0}' does not exist. Make sure that the name is entered correctly."),
    976: (14, "The target database, '{0}', is participating in an availability group and is currently not "
               "accessible for queries. Either data movement is suspended or the availability replica is not "
               "enabled for read access. To allow read-only access to this and other databases in the "
               "availability group, enable read access to one or more secondary availability replicas in the "
               "group.  For more information, see the ALTER AVAILABILITY GROUP statement in SQL Server Books "
               "Online."),
    978: (14, "The target database ('{0}') is in an availability group and is currently accessible for "
               "connections when the application intent is set to read only. For more information about "
               "application intent, see SQL Server Books Online."),
    2812: (16, "Could not find stored procedure '{0}'."),
    3906: (16, "Failed to update database \"{0}\" because the database is read-only."),
    4060: (11, "Cannot open database \"{0}\" requested by the login. The login failed."),
    4860: (16, "Cannot bulk load. The file \"{0}\" does not exist or you don't have file access rights."),
    8114: (16, "Error converting data type {0} to {1}."),
    15007: (16, "'{0}' is not a valid login or you do not have permission."),
    15010: (16, "The database '{0}' does not exist. Supply a valid database name. To see available databases, "
                "use sys.databases."),
    15023: (16, "User, group, or role '{0}' already exists in the current database."),
    15025: (16, "The server principal '{0}' already exists."),
    15116: (16, "Password validation failed. The password does not meet the operating system policy "
                "requirements because it is too short."),
    15117: (16, "Password validation failed. The password does not meet the operating system policy "
                "requirements because it is too long."),
    15118: (16, "Password validation failed. The password does not meet the operating system policy "
                "requirements because it is not complex enough."),
    15151: (16, "Cannot find the {0} '{1}', because it does not exist or you do not have permission."),
    15208: (16, "The certificate, asymmetric key, or private key file is not valid or does not exist; or you "
                "do not have permissions for it."),
    15232: (16, "A certificate with name '{0}' already exists or this certificate already has been added to "
                "the database."),
    15240: (16, "Cannot write into file '{0}'. Verify that you have write permissions, that the file path is "
                "valid, and that the file does not already exist."),
    15246: (16, "Cannot dump the private key of certificate '{0}' because the private key cannot be found."),
    15247: (16, "User does not have permission to perform this action."),
    15276: (16, "Cannot provision master key passwords for system databases."),
    15313: (16, "The key is not encrypted using the specified decryptor."),
    15315: (16, "The key '{0}' is not open. Please open the key before using it."),
    15317: (16, "The master key file does not exist or has invalid format."),
    15329: (16, "The current master key cannot be decrypted. If this is a database master key, you should "
                "attempt to open it in the session before performing this operation. The FORCE option can be "
                "used to ignore this error and continue the operation but the data encrypted by the old master "
                "key will be lost."),
    15465: (16, "The private key password is invalid."),
    15466: (16, "An error occurred during decryption."),
    15474: (16, "The private key does not match the public key of the certificate."),
    15558: (16, "Cannot drop {0} by {1} '{2}'."),
    15578: (16, "There is already a master key in the database. Please drop it before performing this "
                "statement."),
    15579: (16, "Adding an encryption to the symmetric key failed. An encryption by the same {0} '{1}' may "
                "already exist."),
    15580: (16, "Cannot drop {0} because {1} '{2}' is encrypted by it."),
    15581: (16, "Please create a master key in the database or open the master key in the session before "
                "performing this operation."),
    15588: (10, "The old and new master keys are identical. No data re-encryption is required."),
    15594: (16, "The password is already provisioned for the database '{0}'"),
    15595: (16, "The password cannot be dropped because it is not provisioned for the database '{0}'"),
    15600: (15, "An invalid parameter or option was specified for procedure '{0}'."),
    18456: (14, "Login failed for user '{0}'."),
    18452: (14, "Login failed. The login is from an untrusted domain and cannot be used with Integrated "
                "authentication."),
    41122: (16, "Cannot failover availability group '{0}' to this instance of SQL Server.  The local "
                "availability replica is already the primary replica of the availability group.  To failover "
                "this availability group to another instance, run the failover command on that instance.  If "
                "local instance is intended to host the primary replica of the availability group, then no "
                "action is required."),
    41104: (16, "Failover of the availability group '{0}' to the local replica failed because the availability "
                "group resource did not come online due to a previous error."),
    50000: (16, "{0}"),
}


class SqlError(Exception):
    def __init__(self, number, *args, state=1, cls=None, msg=None):
        sev, tmpl = ERRORS.get(number, (16, "{0}"))
        self.number = number
        self.state = state
        self.cls = cls if cls is not None else sev
        self.msg = msg if msg is not None else tmpl.format(*args)
        self.proc = ""
        self.line = 1
        super().__init__(f"{number}: {self.msg}")


class DropConnection(Exception):
    """A fault: close the connection without answering."""

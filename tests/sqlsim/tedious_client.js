// Drives sqlsim with npm tedious 19 (encrypt true, trustServerCertificate false, the test CA).
// usage: node tedious_client.js PORT CA_PEM PASSWORD  -> prints one JSON line with the results
'use strict';
const fs = require('fs');
const path = require('path');
let tedious;
try {
  tedious = require(path.join(__dirname, '..', 'js', 'node_modules', 'tedious'));
} catch (e) {
  console.log(JSON.stringify({ skip: 'tedious not installed' }));
  process.exit(77);
}
const { Connection, Request, TYPES } = tedious;
const [port, ca, password, extra] = process.argv.slice(2);

function connect(opts) {
  return new Promise((resolve, reject) => {
    const c = new Connection({
      server: 'localhost',
      authentication: { type: 'default', options: { userName: 'sa', password } },
      options: Object.assign({
        port: Number(port), encrypt: true, trustServerCertificate: false,
        cryptoCredentialsDetails: { ca: fs.readFileSync(ca) }, serverName: 'localhost',
        database: 'CM_P01', connectTimeout: 10000, requestTimeout: 10000,
      }, opts || {}),
    });
    c.on('connect', (err) => (err ? reject(err) : resolve(c)));
    c.connect();
  });
}

function query(c, sql) {
  return new Promise((resolve, reject) => {
    const rows = [];
    const r = new Request(sql, (err) => (err ? reject(err) : resolve(rows)));
    r.on('row', (cols) => rows.push(cols.map((x) => (Buffer.isBuffer(x.value) ? x.value.toString('hex') : x.value))));
    c.execSql(r);
  });
}

function param(c, sql, params) {
  return new Promise((resolve, reject) => {
    const rows = [];
    const r = new Request(sql, (err) => (err ? reject(err) : resolve(rows)));
    for (const [n, t, v] of params) r.addParameter(n, TYPES[t], v);
    r.on('row', (cols) => rows.push(cols.map((x) => x.value)));
    c.execSql(r);
  });
}

function proc(c, name, params) {
  return new Promise((resolve, reject) => {
    let status = null;
    const r = new Request(name, (err) => (err ? reject(err) : resolve(status)));
    for (const [n, t, v] of params) r.addParameter(n, TYPES[t], v);
    r.on('returnValue', () => {});
    r.on('doneProc', (rowCount, more, returnStatus) => { if (returnStatus !== undefined) status = returnStatus; });
    c.callProcedure(r);
  });
}

(async () => {
  const out = {};
  try {
    const c = await connect();
    out.server = (await query(c, 'SELECT @@SERVERNAME'))[0][0];
    out.check = (await query(c, 'SELECT TOP 5 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) ' +
      'FROM RecoveryAndHardwareCore_Keys ORDER BY LastUpdateTime DESC')).map((r) => r[0]);
    out.types = (await query(c, "SELECT CAST(1 AS bit), CAST(NULL AS int), CAST(9000000000 AS bigint), N'x''y', " +
      "0xABCD, CAST('6F9619FF-8B86-D011-B42D-00C04FC964FF' AS uniqueidentifier)"))[0];
    out.param = (await param(c, 'SELECT name FROM sys.databases WHERE name = @db AND database_id = @id',
      [['db', 'NVarChar', 'CM_P01'], ['id', 'Int', 5]]));
    out.status = await proc(c, 'sp_control_dbmasterkey_password',
      [['db_name', 'NVarChar', 'CM_P01'], ['password', 'NVarChar', extra || 'Ted#Passw0rd-1'], ['action', 'NVarChar', 'add']]);
    try {
      await proc(c, 'sp_control_dbmasterkey_password',
        [['db_name', 'NVarChar', 'CM_P01'], ['password', 'NVarChar', extra || 'Ted#Passw0rd-1'], ['action', 'NVarChar', 'add']]);
      out.dup = 'no error';
    } catch (e) { out.dup = e.number; }
    try { await query(c, 'SELEC 1'); } catch (e) { out.syntax = e.number; }
    out.creds = (await query(c, 'SELECT COUNT(*) FROM sys.master_key_passwords'))[0][0];
    c.close();
    try {
      await connect({ cryptoCredentialsDetails: { ca: fs.readFileSync(path.join(path.dirname(ca), 'other-ca.pem')) } });
      out.wrong_ca = 'connected';
    } catch (e) { out.wrong_ca = 'refused'; }
  } catch (e) {
    out.error = String(e && e.message || e);
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})();

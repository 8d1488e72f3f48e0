"""Availability-group statements: ALTER AVAILABILITY GROUP ... FAILOVER."""
from .errors import SqlError


class AgMixin:
    # ========================================================= availability group
    def x_ag_failover(self, s, out, tok):
        ag = self.state.ag
        if s["ag"].lower() != ag["name"].lower() or not self.server_perm("ALTER ANY AVAILABILITY GROUP"):
            raise SqlError(15151, "availability group", s["ag"])
        if self.is_primary():
            raise SqlError(41122, ag["name"])
        self.server.failover(self.node.idx, initiator=self.sess)
        out.done(0, token=tok)


# statement kind -> handler
STATEMENTS = {
    "ag_failover": AgMixin.x_ag_failover,
}

"""SQL Server Browser (SSRP, [MC-SQLR]) on a UDP port of its own: answers CLNT_UCAST_INST (0x04) and
CLNT_UCAST_EX (0x03) with SVR_RESP (0x05, RESP_SIZE little endian, RESP_DATA) for the named instances
among the replica names (SERVER\\INSTANCE).  Like the real service, it stays silent about an instance it
does not have.  `mode` (control POST /browser) makes it misbehave for tests: silent, garbage (a
RESP_SIZE longer than the datagram), other-instance (answers about another instance), no-tcp."""
import socket
import struct
import threading


def _block(server, instance, port):
    return (f"ServerName;{server};InstanceName;{instance};IsClustered;No;Version;15.0.2000.5;"
            f"tcp;{port};;")


class Browser:
    def __init__(self, sim, port):
        self.sim = sim
        self.mode = "normal"
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]      # port 0: the kernel's choice

    def start(self):
        threading.Thread(target=self.loop, daemon=True).start()

    def instances(self):
        st = self.sim.state
        out = []
        for n in st.nodes:
            name = st.ag["replicas"][n.idx]["name"]
            if "\\" in name and n.up:
                srv, inst = name.split("\\", 1)
                out.append((srv, inst, st.base_port + n.idx))
        return out

    def answer(self, req):
        if not req:
            return None
        if req[0] == 0x04:
            want = req[1:].split(b"\0", 1)[0].decode("ascii", "replace")
            hits = [i for i in self.instances() if i[1].lower() == want.lower()]
            if not hits:
                return None
            srv, inst, port = hits[0]
            if self.mode == "other-instance":
                inst = inst + "X"
            data = _block(srv, inst, port)
            if self.mode == "no-tcp":
                data = f"ServerName;{srv};InstanceName;{inst};IsClustered;No;Version;15.0.2000.5;np;x;;"
        elif req[0] in (0x02, 0x03):
            data = "".join(_block(*i) for i in self.instances())
        else:
            return None
        b = data.encode("ascii")
        if self.mode == "garbage":
            return struct.pack("<BH", 0x05, len(b) + 100) + b
        return struct.pack("<BH", 0x05, len(b)) + b

    def loop(self):
        while True:
            try:
                req, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            self.requests += 1
            if self.mode == "silent":
                continue
            with self.sim.state.lock:
                resp = self.answer(req)
            if resp is not None:
                try:
                    self.sock.sendto(resp, addr)
                except OSError:
                    pass

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass

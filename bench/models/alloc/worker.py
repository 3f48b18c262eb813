"""alloc — a model that holds parameters.mib MiB once loaded (the memory-reclaim benchmark).

Every page is written, so all of it is resident: the benchmark reads the
host's memory before load, after load and after unload.
"""
import corral


class Alloc(corral.Model):
    def load(self, ctx: corral.Context) -> None:
        mib = int(ctx.parameters.get("mib", 512))
        # Repeating one byte writes every page.
        self.weights = bytearray(b"\x01") * (mib << 20)

    def infer(self, request: corral.Request) -> dict:
        return {"OUTPUT0": [len(self.weights)]}


if __name__ == "__main__":
    corral.run(Alloc)

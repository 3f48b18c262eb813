"""variant_ctx — generate answers the load context it was given (see model.yaml)."""
import os

import corral


class Ctx(corral.Model):
    def load(self, ctx):
        self.ctx = ctx
        self.cwd = os.getcwd()

    def generate(self, request):
        c = self.ctx
        extra = None
        if c.variant_dir and os.path.exists(os.path.join(c.variant_dir, "extra.txt")):
            with open(os.path.join(c.variant_dir, "extra.txt")) as f:
                extra = f.read()
        env = {k: os.environ.get(k) for k in ("CORRAL_MODEL", "CORRAL_MODEL_DIR", "CORRAL_VARIANT_DIR")}
        return {"name": c.name, "model_dir": c.model_dir, "variant_dir": c.variant_dir, "cwd": self.cwd,
                "env": env, "parameters": c.parameters, "extra": extra}


if __name__ == "__main__":
    corral.run(Ctx)

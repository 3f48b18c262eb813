"""fetcher: writes a model into ctx.external_models_dir at first load (see model.yaml)."""
import os
import shutil

import corral


class Fetcher(corral.Model):
    def load(self, ctx):
        if ctx.external_models_dir is None:
            raise RuntimeError("the daemon has no external models directory (corral serve --external-models DIR)")
        self.target = os.path.join(ctx.external_models_dir, str(ctx.parameters.get("target", "weights-x")))
        self.fetched = False
        if os.path.isdir(self.target):
            return  # downloaded by an earlier load: it persisted
        os.makedirs(ctx.external_models_dir, exist_ok=True)
        partial = os.path.join(ctx.external_models_dir, f".{os.path.basename(self.target)}.partial-{os.getpid()}")
        try:
            shutil.copytree(os.path.join(ctx.model_dir, "payload"), partial)
            os.rename(partial, self.target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # a failed download leaves nothing behind
            raise
        self.fetched = True
        print(f"fetcher: wrote {self.target}", flush=True)

    def generate(self, request):
        return {"target": self.target, "fetched": self.fetched}


if __name__ == "__main__":
    corral.run(Fetcher)

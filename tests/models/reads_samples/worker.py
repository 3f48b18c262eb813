"""reads_samples: reads a speaker sample from ctx.samples_dir at load (see model.yaml)."""
import os

import corral


class ReadsSamples(corral.Model):
    def load(self, ctx):
        if ctx.samples_dir is None:
            raise RuntimeError("the daemon has no samples directory (corral serve --samples DIR)")
        self.dirs = {"samples_dir": ctx.samples_dir, "external_models_dir": ctx.external_models_dir}
        with open(os.path.join(ctx.samples_dir, str(ctx.parameters.get("sample", "speaker.txt")))) as f:
            self.sample = f.read()

    def generate(self, request):
        return {**self.dirs, "sample": self.sample}


if __name__ == "__main__":
    corral.run(ReadsSamples)

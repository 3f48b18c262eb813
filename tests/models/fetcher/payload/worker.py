"""The model tests/models/fetcher writes into external_models/: it serves its downloaded weights."""
import os

import corral


class Fetched(corral.Model):
    def load(self, ctx):
        with open(os.path.join(ctx.model_dir, "weights.txt")) as f:
            self.weights = f.read().strip()
        self.model_dir = ctx.model_dir

    def generate(self, request):
        return {"weights": self.weights, "model_dir": self.model_dir}


if __name__ == "__main__":
    corral.run(Fetched)

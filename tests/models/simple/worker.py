"""simple — Triton's example model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32)."""
import corral


def flat(t):
    values = t.tolist()
    out = []
    stack = [values]
    while stack:  # row-major: nested lists flattened in order
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        else:
            out.append(int(v))
    return out


class Simple(corral.Model):
    def infer(self, request):
        a, b = request.inputs["INPUT0"], request.inputs["INPUT1"]
        shape = list(a.shape)
        x, y = flat(a), flat(b)
        wrap = lambda v: (v + 2**31) % 2**32 - 2**31  # INT32 arithmetic, as Triton's model does
        return {"OUTPUT0": corral.Tensor("INT32", shape, [wrap(p + q) for p, q in zip(x, y)]),
                "OUTPUT1": corral.Tensor("INT32", shape, [wrap(p - q) for p, q in zip(x, y)])}


if __name__ == "__main__":
    corral.run(Simple)

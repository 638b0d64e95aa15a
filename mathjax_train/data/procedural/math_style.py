"""MATH-style algebra/arithmetic problems with ``\\boxed{}`` answers, levels 1-5, written here.

Templates take (rng, level) and return (question, solution, answer, check); the solution is `Methods`
(procedural/methods.py) where the template knows several ways to solve the problem. Answers are computed
with exact integer/Fraction arithmetic (fast enough to feed training); ``check`` is a sympy-syntax
statement of the problem that verify.py re-solves with sympy independently.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction as F

from mathjax_train.data.procedural import tex
from mathjax_train.data.procedural.gsm_style import Resample
from mathjax_train.data.procedural.methods import Methods


def _nz(rng: random.Random, lo: int, hi: int) -> int:
    """Random nonzero int in [lo, hi]."""
    while True:
        v = rng.randint(lo, hi)
        if v:
            return v


def _paren(v: int) -> str:
    """An integer as a factor: negative ones in parentheses."""
    return f"\\left({v}\\right)" if v < 0 else str(v)


def _boxed(sol: list[str], answer: str) -> str:
    return "\n".join(sol) + f"\nThe answer is $\\boxed{{{answer}}}$."


def linear_equation(rng: random.Random, level: int):
    x = "x"
    if level <= 2:
        a, sol_x, b = _nz(rng, 2, 9), rng.randint(-12, 12), _nz(rng, -20, 20)
        c = 1 if level == 1 else rng.choice([v for v in range(-6, 7) if v not in (0, a)])
        if level == 1:
            d = a * sol_x + b
            lhs, rhs = tex.linear(a, b), str(d)
            steps = [f"Subtract ${b}$ from both sides: ${a}x = {d - b}$."]
            eq_py = f"{a}*x + ({b}) - ({d})"
        else:
            d = (a - c) * sol_x + b
            lhs, rhs = tex.linear(a, b), tex.linear(c, d)
            steps = [
                f"Move the $x$ terms to the left and the constants to the right: ${tex.poly([a - c, 0])} = {d - b}$."
            ]
            eq_py = f"{a}*x + ({b}) - ({c}*x + ({d}))"
        coef = a if level == 1 else a - c
        steps.append(f"Divide by ${coef}$: $x = {tex.num(sol_x)}$.")
        answer = F(sol_x)
    elif level <= 4:
        a, b, c = _nz(rng, 2, 9), _nz(rng, -9, 9), rng.choice([v for v in range(-7, 8) if v not in (0,)])
        if a == c:
            raise Resample
        if level == 3:
            answer = F(rng.randint(-10, 10))
        else:
            answer = F(_nz(rng, -15, 15), rng.randint(2, 7))
            if answer.denominator == 1 or (a - c) * answer.numerator % answer.denominator:
                raise Resample  # keep the constant integral: (a-c)*x must be an integer
        d_exact = a * (answer + b) - c * answer
        if d_exact.denominator != 1:
            raise Resample
        d = int(d_exact)
        lhs, rhs = f"{a}\\left({tex.linear(1, b)}\\right)", tex.linear(c, d)
        steps = [
            f"Expand the left side: ${tex.linear(a, a * b)} = {rhs}$.",
            f"Collect terms: ${tex.poly([a - c, 0])} = {d - a * b}$.",
            f"Divide by ${a - c}$: $x = {tex.num(answer)}$.",
        ]
        eq_py = f"{a}*(x + ({b})) - ({c}*x + ({d}))"
    else:
        p, r = rng.sample(range(2, 10), 2)
        q, s = rng.randint(-9, 9), rng.randint(-9, 9)
        if q == s:
            raise Resample
        answer = F((s - q) * p * r, r - p)
        m = p * r // math.gcd(p, r)
        lhs, rhs = f"\\frac{{x}}{{{p}}} + {q}".replace("+ -", "- "), f"\\frac{{x}}{{{r}}} + {s}".replace("+ -", "- ")
        steps = [
            f"Multiply both sides by ${m}$: ${tex.linear(m // p, m * q)} = {tex.linear(m // r, m * s)}$.",
            f"Collect terms: ${tex.poly([m // p - m // r, 0])} = {m * (s - q)}$.",
            f"So $x = {tex.num(answer)}$.",
        ]
        eq_py = f"x/{p} + ({q}) - (x/{r} + ({s}))"
    question = f"Solve for ${x}$: ${lhs} = {rhs}$."
    check = {"kind": "solve", "equations": [eq_py], "vars": ["x"], "target": "x"}
    solution: str | Methods = _boxed(steps, tex.num(answer))
    if level == 1:  # a second method: x in one formula, the constant moved and divided out at once
        at_once = [f"Isolate $x$: $x = \\frac{{{d} - ({b})}}{{{a}}} = \\frac{{{d - b}}}{{{a}}} = {tex.num(answer)}$."]
        solution = Methods(solution, _boxed(at_once, tex.num(answer)))
    return question, solution, tex.num(answer), check


def fraction_arithmetic(rng: random.Random, level: int):
    def fr(lo=2, hi=12):
        d = rng.randint(lo, hi)
        return F(_nz(rng, 1, d - 1 if d > 2 else 1), d) if level < 4 else F(_nz(rng, -9, 9), d)

    a, b = fr(), fr()
    if level == 1:
        d = rng.randint(3, 25)
        n1, n2 = rng.randint(1, d - 1), rng.randint(1, d - 1)
        val = F(n1 + n2, d)
        expr_tex = f"\\frac{{{n1}}}{{{d}}} + \\frac{{{n2}}}{{{d}}}"
        py = f"Rational({n1}, {d}) + Rational({n2}, {d})"
        steps = [f"The denominators are equal, so add the numerators: ${tex.num(val)}$."]
    elif level == 2:
        op = rng.choice("+-")
        val = a + b if op == "+" else a - b
        m = a.denominator * b.denominator // math.gcd(a.denominator, b.denominator)
        expr_tex, py = f"{tex.num(a)} {op} {tex.num(b)}", f"{tex.py(a)} {op} {tex.py(b)}"
        steps = [
            f"Use the common denominator ${m}$: "
            f"$\\frac{{{a.numerator * (m // a.denominator)}}}{{{m}}} {op} "
            f"\\frac{{{b.numerator * (m // b.denominator)}}}{{{m}}} = {tex.num(val)}$."
        ]
    elif level == 3:
        times = rng.random() < 0.5
        val = a * b if times else a / b
        op_tex = "\\cdot" if times else "\\div"
        expr_tex = f"{tex.num(a)} {op_tex} {tex.num(b)}"
        py = f"{tex.py(a)} {'*' if times else '/'} ({tex.py(b)})"
        steps = (
            [f"Multiply numerators and denominators: ${tex.num(val)}$."]
            if times
            else [f"Dividing by ${tex.num(b)}$ is multiplying by ${tex.num(1 / b)}$, giving ${tex.num(val)}$."]
        )
    else:
        c, d = fr(), fr()
        if 0 in (a, b, c, d) or (level == 5 and c + d == 0):
            raise Resample
        left = a + b
        if level == 4:
            val = left * c
            expr_tex = f"\\left({tex.num(a)} + {tex.paren(b)}\\right) \\cdot {tex.paren(c)}"
            py = f"({tex.py(a)} + ({tex.py(b)})) * ({tex.py(c)})"
            steps = [
                f"First ${tex.num(a)} + {tex.paren(b)} = {tex.num(left)}$.",
                f"Then ${tex.paren(left)} \\cdot {tex.paren(c)} = {tex.num(val)}$.",
            ]
        else:
            right = c + d
            val = left / right
            expr_tex = f"\\frac{{{tex.num(a)} + {tex.paren(b)}}}{{{tex.num(c)} + {tex.paren(d)}}}"
            py = f"({tex.py(a)} + ({tex.py(b)})) / ({tex.py(c)} + ({tex.py(d)}))"
            steps = [
                f"The numerator is ${tex.num(left)}$ and the denominator is ${tex.num(right)}$.",
                f"Their quotient is ${tex.num(val)}$.",
            ]
    question = f"Compute ${expr_tex}$. Express your answer as a common fraction in lowest terms."
    if val.denominator == 1:
        question = f"Compute ${expr_tex}$."
    return question, _boxed(steps, tex.num(val)), tex.num(val), {"kind": "value", "expr": py}


def _term(c: int, at: F, power: int) -> str:
    if power == 0:
        return tex.paren(c)
    return f"{tex.paren(c)} \\cdot {tex.paren(at)}" + (f"^{power}" if power > 1 else "")


def polynomial_evaluation(rng: random.Random, level: int):
    deg = {1: 1, 2: 2, 3: 3, 4: 2, 5: 2}[level]
    coeffs = [_nz(rng, -6, 6)] + [rng.randint(-9, 9) for _ in range(deg)]
    at = F(_nz(rng, -4, 4)) if level != 4 else F(_nz(rng, -5, 5), rng.choice([2, 3]))
    if level < 5:
        val = tex.poly_eval(coeffs, at)
        question = f"If $f(x) = {tex.poly(coeffs)}$, what is $f\\left({tex.num(at)}\\right)$?"
        terms = [f"{tex.py(c)}*({tex.py(at)})**{deg - i}" for i, c in enumerate(coeffs)]
        steps = [
            f"Substitute $x = {tex.num(at)}$: $f\\left({tex.num(at)}\\right) = "
            + " + ".join(_term(c, at, deg - i) for i, c in enumerate(coeffs))
            + f" = {tex.num(val)}$."
        ]
        py = " + ".join(terms)
    else:
        g = [_nz(rng, -3, 3), rng.randint(-5, 5)]
        inner = tex.poly_eval(g, at)
        val = tex.poly_eval(coeffs, inner)
        question = f"Let $f(x) = {tex.poly(coeffs)}$ and $g(x) = {tex.poly(g)}$. What is $f(g({tex.num(at)}))$?"
        steps = [f"First $g({tex.num(at)}) = {tex.num(inner)}$.", f"Then $f({tex.num(inner)}) = {tex.num(val)}$."]
        py = f"({tex.poly_py(coeffs)}).subs(x, ({tex.poly_py(g)}).subs(x, {tex.py(at)}))"
    return question, _boxed(steps, tex.num(val)), tex.num(val), {"kind": "value", "expr": py}


def quadratic_roots(rng: random.Random, level: int):
    r1, r2 = rng.sample(range(1, 21) if level == 1 else range(-15, 16) if level == 2 else range(-9, 10), 2)
    lead = 1 if level <= 2 else rng.randint(2, 5)
    f1 = [1, -r1]
    if level >= 4:
        p = rng.randint(2, 5)
        f1, root1 = [p, -r1], F(r1, p)  # (p x - r1)
        if root1.denominator == 1:
            raise Resample
        lead = 1
    else:
        root1 = F(r1)
    coeffs = [lead * c for c in tex.poly_mul(f1, [1, -r2])]
    roots = sorted({root1, F(r2)})
    if level == 5:
        shift = [rng.randint(-5, 5), _nz(rng, -9, 9)]  # add shift x + k to both sides
        lhs = tex.poly_add(coeffs, shift)
        question = f"Find all solutions of ${tex.poly(lhs)} = {tex.poly(shift)}$. Separate them with commas."
        steps = [f"Bring everything to one side: ${tex.poly(coeffs)} = 0$."]
        eq = f"{tex.poly_py(lhs)} - ({tex.poly_py(shift)})"
    else:
        question = f"Find all solutions of ${tex.poly(coeffs)} = 0$. Separate them with commas."
        steps = []
        eq = tex.poly_py(coeffs)
    if level == 1:
        question = f"What is the larger solution of ${tex.poly(coeffs)} = 0$?"
    factored = f"{lead if lead > 1 else ''}\\left({tex.poly(f1)}\\right)\\left({tex.poly([1, -r2])}\\right)"
    roots_line = "So $x = " + "$ or $x = ".join(tex.num(r) for r in roots) + "$."
    target = "max" if level == 1 else "set"
    answer = tex.num(roots[-1]) if level == 1 else ", ".join(tex.num(r) for r in roots)
    check = {"kind": "solve", "equations": [eq], "vars": ["x"], "target": target}
    a, b, c = coeffs
    disc = b * b - 4 * a * c
    root = math.isqrt(disc)  # the roots are rational, so the discriminant is a square
    formula = [
        f"The discriminant is ${_paren(b)}^2 - 4 \\cdot {a} \\cdot {_paren(c)} = {disc}$, and $\\sqrt{{{disc}}} = {root}$.",
        f"So $x = \\frac{{{tex.num(-b)} \\pm {root}}}{{{2 * a}}}$, that is $x = "
        + "$ or $x = ".join(tex.num(r) for r in roots)
        + "$.",
    ]
    methods = [_boxed(steps + [f"Factor: ${factored} = 0$.", roots_line], answer), _boxed(steps + formula, answer)]
    if a == 1 and root1.denominator == 1:  # monic with integer roots: two numbers by their sum and product
        pair = f"${tex.num(roots[0])}$ and ${tex.num(roots[-1])}$"
        vieta = f"Two numbers with sum ${tex.num(-b)}$ and product ${tex.num(c)}$ are {pair}."
        methods.append(_boxed(steps + [vieta, roots_line], answer))
    return question, Methods(*methods), answer, check


def expand_product(rng: random.Random, level: int):
    def lin(lo_a=1, hi_a=1):
        return [_nz(rng, lo_a, hi_a), _nz(rng, -15, 15)]

    if level == 1:
        k, f = _nz(rng, -9, 9), lin(2, 9)
        parts, py = f"{k}\\left({tex.poly(f)}\\right)", f"{k}*({tex.poly_py(f)})"
        res = [k * c for c in f]
    elif level in (2, 3):
        f, g = (lin(), lin()) if level == 2 else (lin(-5, 5), lin(-5, 5))
        parts = f"\\left({tex.poly(f)}\\right)\\left({tex.poly(g)}\\right)"
        py, res = f"({tex.poly_py(f)})*({tex.poly_py(g)})", tex.poly_mul(f, g)
    elif level == 4:
        f, g, h = lin(-4, 4), lin(-4, 4), lin()
        parts = f"\\left({tex.poly(f)}\\right)^2 - \\left({tex.poly(g)}\\right)\\left({tex.poly(h)}\\right)"
        py = f"({tex.poly_py(f)})**2 - ({tex.poly_py(g)})*({tex.poly_py(h)})"
        res = tex.poly_add(tex.poly_mul(f, f), [-c for c in tex.poly_mul(g, h)])
    else:
        f, q = lin(), [1, rng.randint(-6, 6), _nz(rng, -9, 9)]
        parts = f"\\left({tex.poly(f)}\\right)\\left({tex.poly(q)}\\right)"
        py, res = f"({tex.poly_py(f)})*({tex.poly_py(q)})", tex.poly_mul(f, q)
    while len(res) > 1 and res[0] == 0:
        res = res[1:]
    answer = tex.poly(res)
    question = f"Expand and simplify ${parts}$."
    steps = [f"Distribute each term and combine like terms: ${parts} = {answer}$."]
    solution: str | Methods = _boxed(steps, answer)
    if level == 1:  # a second method: each term's product on its own line
        terms = [
            f"Multiply each term by ${k}$: ${k} \\cdot {tex.poly([f[0], 0])} = {tex.poly([k * f[0], 0])}$ "
            f"and ${k} \\cdot {tex.num(f[1])} = {tex.num(k * f[1])}$.",
            f"So the product is ${answer}$.",
        ]
        solution = Methods(solution, _boxed(terms, answer))
    return question, solution, answer, {"kind": "expand", "expr": py}


def _factor(n: int) -> dict[int, int]:
    out: dict[int, int] = {}
    p = 2
    while p * p <= n:
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def _fac_tex(n: int) -> str:
    return " \\cdot ".join(f"{p}^{{{e}}}" if e > 1 else str(p) for p, e in sorted(_factor(n).items()))


def gcd_lcm(rng: random.Random, level: int):
    count = 2 if level in (1, 2, 5) else 3
    base = rng.randint(2, 20 if level < 3 else 30)
    nums = sorted({base * rng.randint(1, 20 if level < 3 else 25) for _ in range(count)})
    if len(nums) < count or nums[-1] > 1000:
        raise Resample
    g, l = math.gcd(*nums), math.lcm(*nums)
    listed = ", ".join(map(str, nums[:-1])) + f"{',' if count > 2 else ''} and {nums[-1]}"
    facs = [f"${n} = {_fac_tex(n)}$" for n in nums]
    steps = ["Factor: " + ", ".join(facs) + "."]
    args = ", ".join(map(str, nums))
    if level in (1, 3):
        question, val, py = f"What is the greatest common divisor of {listed}?", g, f"igcd({args})"
        steps.append(f"Take each common prime to its lowest power: ${g}$.")
    elif level in (2, 4):
        question, val, py = f"What is the least common multiple of {listed}?", l, f"ilcm({args})"
        steps.append(f"Take each prime to its highest power: ${l}$.")
    else:
        question = f"What is the sum of the greatest common divisor and the least common multiple of {listed}?"
        val, py = g + l, f"igcd({args}) + ilcm({args})"
        steps.append(f"The GCD is ${g}$ and the LCM is ${l}$, so the sum is ${g + l}$.")
    solution: str | Methods = _boxed(steps, str(val))
    if level in (1, 2):  # two numbers: Euclid's algorithm instead of factoring
        euclid = [_euclid_line(*nums)]
        if level == 1:
            euclid.append(f"The last nonzero remainder is ${g}$.")
        else:
            euclid.append(f"The GCD is ${g}$, so the LCM is $\\frac{{{nums[0]} \\cdot {nums[1]}}}{{{g}}} = {l}$.")
        solution = Methods(solution, _boxed(euclid, str(val)))
    return question, solution, str(val), {"kind": "value", "expr": py}


def _euclid_line(small: int, big: int) -> str:
    """Euclid's algorithm on two numbers as one line of divisions with remainder."""
    divisions = []
    while small:
        divisions.append(f"${big} = {big // small} \\cdot {small} + {big % small}$")
        big, small = small, big % small
    return "Use Euclid's algorithm: " + ", ".join(divisions) + "."


def linear_system(rng: random.Random, level: int):
    x: int | F = rng.randint(-20, 20)
    y: int | F = rng.randint(-20, 20)
    if level == 1:
        a, b, c, d = 1, 1, 1, -1
    else:
        lim = 3 if level <= 3 else 7
        a, b, c, d = (_nz(rng, -lim, lim) for _ in range(4))
    det = a * d - b * c
    if det == 0:
        raise Resample
    if level == 5:
        x, y = F(_nz(rng, -9, 9), 2), F(rng.randint(-9, 9), 3)
    e, f = a * x + b * y, c * x + d * y
    if F(e).denominator != 1 or F(f).denominator != 1:
        raise Resample
    e1, e2 = f"{tex.poly([a, 0], 'x')} + {tex.poly([b, 0], 'y')}", f"{tex.poly([c, 0], 'x')} + {tex.poly([d, 0], 'y')}"
    e1, e2 = e1.replace("+ -", "- "), e2.replace("+ -", "- ")
    system = f"${e1} = {tex.num(e)}$ and ${e2} = {tex.num(f)}$"
    eqs = [f"{a}*x + ({b})*y - ({e})", f"{c}*x + ({d})*y - ({f})"]
    if level == 1:
        first = f"Add the two equations: $2x = {e + f}$, so $x = {tex.num(x)}$."
    else:
        first = (
            f"Eliminate $y$: multiply the first equation by ${d}$ and the second by ${b}$ and "
            f"subtract, giving ${tex.poly([det, 0])} = {tex.num(d * e - b * f)}$, so $x = {tex.num(x)}$."
        )
    steps = [first, f"Substituting back gives $y = {tex.num(y)}$."]
    if level <= 2:
        question, answer, target = f"If {system}, what is $x$?", tex.num(x), "x"
    elif level == 3:
        question, answer, target = f"If {system}, what is $x + y$?", tex.num(F(x) + y), "x + y"
    else:
        question = f"Solve the system {system}. Enter your answer as an ordered pair $(x, y)$."
        answer, target = f"\\left({tex.num(x)}, {tex.num(y)}\\right)", "pair"
    check = {"kind": "solve", "equations": eqs, "vars": ["x", "y"], "target": target}
    return question, _boxed(steps, answer), answer, check


TEMPLATES = {
    "linear_equation": linear_equation,
    "fraction_arithmetic": fraction_arithmetic,
    "polynomial_evaluation": polynomial_evaluation,
    "quadratic_roots": quadratic_roots,
    "expand_product": expand_product,
    "gcd_lcm": gcd_lcm,
    "linear_system": linear_system,
}

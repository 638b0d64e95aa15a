"""A small LaTeX-to-sympy translator and sympy-based equality (runs inside the worker pool).

The translator builds sympy objects directly from a recursive-descent parse (no `eval`, no
`sympify` of raw text, no antlr).  It knows `\\frac`, `\\sqrt[n]{}`, `^`, `_` subscripts,
`\\pi`, `\\infty`, `\\cdot`/`\\times`/`\\div`, implicit multiplication, `|x|`, `!`, `\\binom`,
trig/log functions (`\\sin^2 x`, `\\log_2 8`).  Every run of letters is a product of
one-letter symbols (`ab` = a*b); `i` is the imaginary unit.  Huge powers and factorials are
refused before sympy tries to evaluate them.
"""

from __future__ import annotations

import random
import re

import sympy as sp

from . import numbers as nb

MAX_LEN = 1000
MAX_POW_BITS = 20000
REL_TOL = sp.Rational(nb.REL_TOL)  # when a side is a decimal approximation (policy: numbers.py)
SAMPLE_TOL = sp.Rational(1, 10**6)  # numeric noise in the ratios `proportional` samples
EXACT_TOL = sp.Rational(1, 10**20)  # otherwise: exact up to the 30-digit evaluation


class ParseError(ValueError):
    """The text is not an expression this translator understands."""


_TOKEN_RE = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[a-zA-Z]+|\\[{}|]|[a-zA-Z]|<=|>=|!=|[-+*/^_(){}\[\]|!=<>,'&])")

_FUNCS = {
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "cot": sp.cot,
    "sec": sp.sec,
    "csc": sp.csc,
    "arcsin": sp.asin,
    "arccos": sp.acos,
    "arctan": sp.atan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "ln": sp.log,
    "log": sp.log,
    "exp": sp.exp,
}
_GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
}
_MUL_CMDS = {"\\cdot", "\\times", "\\ast"}


def _tokenize(s: str) -> list[str]:
    tokens, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m:
            if s[pos:].strip() == "":
                break
            raise ParseError(f"unexpected {s[pos : pos + 10]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _safe_pow(base, exp):
    if exp.is_Number and base.is_Number:
        if abs(exp) > MAX_POW_BITS or (
            base.is_Integer and abs(base) > 1 and abs(exp) * int(abs(base)).bit_length() > MAX_POW_BITS
        ):
            raise ParseError("power too large")
    elif exp.is_Number and abs(exp) > MAX_POW_BITS:
        raise ParseError("power too large")
    return sp.Pow(base, exp)


class _Parser:
    def __init__(self, text: str):
        if len(text) > MAX_LEN:
            raise ParseError("too long")
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        t = self.peek()
        if t is None or (expected is not None and t != expected):
            raise ParseError(f"expected {expected!r}, got {t!r}")
        self.i += 1
        return t

    def parse(self):
        e = self.expr()
        if self.peek() is not None:
            raise ParseError(f"trailing {self.peek()!r}")
        return e

    def expr(self):
        e = self.term()
        while self.peek() in ("+", "-"):
            e = e + self.term() if self.take() == "+" else e - self.term()
        return e

    def _starts_atom(self, t) -> bool:
        if t is None:
            return False
        if t in ("(", "{", "[") or t[0].isalnum() or t[0] == ".":
            return True
        return t.startswith("\\") and t not in _MUL_CMDS and t not in ("\\div", "\\}", "\\{", "\\|", "\\cr", "\\end")

    def term(self):
        e = self.signed()
        while True:
            t = self.peek()
            if t in ("*", "/") or t in _MUL_CMDS or t == "\\div":
                self.take()
                rhs = self.signed()
                e = e * rhs if t not in ("/", "\\div") else e / rhs
            elif self._starts_atom(t):
                e = e * self.power()
            else:
                return e

    def signed(self):
        if self.peek() in ("-", "+"):
            sign = self.take()
            v = self.signed()
            return -v if sign == "-" else v
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return _safe_pow(base, self.exponent())
        return base

    def exponent(self):
        if self.peek() == "{":
            return self.group()
        if self.peek() in ("-", "+"):
            sign = self.take()
            v = self.exponent()
            return -v if sign == "-" else v
        return self.postfix()

    def postfix(self):
        e = self.atom()
        while self.peek() in ("!", "'"):
            if self.take() == "!":
                if not (e.is_Integer and 0 <= e <= 2000):
                    raise ParseError("factorial out of range")
                e = sp.factorial(e)
            else:
                raise ParseError("primes are not supported")
        return e

    def group(self):
        close = {"{": "}", "(": ")", "[": "]"}[self.take()]
        e = self.expr()
        self.take(close)
        return e

    def arg(self):
        """A LaTeX macro argument: `{...}`, one digit of a number, a letter or a command."""
        t = self.peek()
        if t == "{":
            return self.group()
        if t is not None and t[0].isdigit() and len(t) > 1:
            self.toks[self.i] = t[1:]
            return sp.Integer(int(t[0]))
        return self.atom()

    def number(self, t: str):
        if len(t) > 400:
            raise ParseError("number too long")
        return sp.Rational(t.rstrip(".") if t.endswith(".") else t)

    def atom(self):
        t = self.take()
        if t[0].isdigit() or t[0] == ".":
            return self.number(t)
        if t in ("(", "{", "["):
            self.i -= 1
            return self.group()
        if t == "|":
            e = self.expr()
            self.take("|")
            return sp.Abs(e)
        if t.isalpha() and len(t) == 1:
            return self.letter(t)
        if t.startswith("\\"):
            return self.command(t[1:])
        raise ParseError(f"unexpected {t!r}")

    def letter(self, t: str):
        if self.peek() == "_":
            self.take()
            sub = self.take()
            if sub == "{":
                sub = ""
                while self.peek() not in ("}", None):
                    sub += self.take()
                self.take("}")
            return sp.Symbol(f"{t}_{sub}")
        if t == "i":
            return sp.I
        return sp.Symbol(t)

    def command(self, name: str):
        if name == "frac":
            num = self.arg()
            return num / self.arg()
        if name == "sqrt":
            index = sp.Integer(2)
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.take("]")
            return sp.root(self.arg(), index)
        if name == "begin":
            return self.matrix()
        if name in ("sum", "prod"):
            return self.big_operator(name)
        if name == "binom":
            n = self.arg()
            k = self.arg()
            return sp.binomial(n, k)
        if name == "pi":
            return sp.pi
        if name == "infty":
            return sp.oo
        if name in ("overline", "mathbf", "boldsymbol"):
            return self.arg()
        if name in _GREEK:
            return sp.Symbol(name)
        if name in _FUNCS:
            return self.function(name)
        raise ParseError(f"unknown command \\{name}")

    def _env_name(self) -> str:
        self.take("{")
        name = ""
        while self.peek() not in ("}", None):
            name += self.take()
        self.take("}")
        return name

    def matrix(self) -> sp.ImmutableMatrix:
        """`\\begin{pmatrix} a & b \\cr c & d \\end{pmatrix}` (any matrix environment) -> an immutable Matrix."""
        env = self._env_name()
        if not env.endswith("matrix") and env != "array":
            raise ParseError(f"unknown environment {env}")
        if env == "array" and self.peek() == "{":
            self._env_name()  # the column specification
        rows: list[list] = [[]]
        while True:
            if self.peek() == "\\end":
                self.take()
                if self._env_name() != env:
                    raise ParseError("mismatched environment")
                break
            if self.peek() == "\\cr":
                self.take()
                rows.append([])
                continue
            rows[-1].append(self.expr())
            if self.peek() == "&":
                self.take()
        rows = [r for r in rows if r]
        if not rows or any(len(r) != len(rows[0]) for r in rows) or len(rows) * len(rows[0]) > 400:
            raise ParseError("bad matrix")
        return sp.ImmutableMatrix(rows)

    def big_operator(self, name: str) -> sp.Expr:
        """`\\sum_{k=a}^{b} term` / `\\prod...`: an unevaluated Sum/Product over the term that follows."""
        self.take("_")
        self.take("{")
        var = self.take()
        if not (var.isalpha() and len(var) == 1):
            raise ParseError("bad index")
        self.take("=")
        low = self.expr()
        self.take("}")
        self.take("^")
        high = self.exponent()
        body = self.term()
        cls = sp.Sum if name == "sum" else sp.Product
        return cls(body, (sp.Symbol(var), low, high))

    def function(self, name: str):
        base = None
        power = None
        if self.peek() == "_" and name == "log":
            self.take()
            base = self.arg()
        if self.peek() == "^":
            self.take()
            power = self.exponent()
        if self.peek() in ("(", "{", "["):
            arg = self.group()
        else:  # "\sin 3x": the argument is the implicit product of the atoms that follow
            arg = self.power()
            while self.peek() is not None and (self.peek()[0].isalnum()):
                arg = arg * self.power()
        fn = _FUNCS[name]
        value = sp.log(arg, base) if base is not None else fn(arg)
        if power is not None:  # "\sin^{-1} x" is arcsin, "\sin^2 x" a square
            value = _INVERSES[name](arg) if power == -1 and name in _INVERSES else _safe_pow(value, power)
        return value


_INVERSES = {"sin": sp.asin, "cos": sp.acos, "tan": sp.atan}


def latex_to_sympy(text: str):
    """Translate a normalized LaTeX expression to a sympy object (raises ParseError).

    sympy's own refusals while building it (a square root of a matrix, a matrix in a denominator)
    are ParseErrors too: the text is not an expression we can compare."""
    try:
        result = _Parser(text).parse()
    except ParseError:
        raise
    except (ArithmeticError, TypeError, ValueError, NotImplementedError, RecursionError, AttributeError) as exc:
        raise ParseError(f"{type(exc).__name__}: {exc}"[:200]) from exc
    if isinstance(result, sp.MatrixExpr) and not isinstance(result, sp.MatrixBase):  # a power of a matrix, ...
        raise ParseError("matrix expression")
    return result


def _close(a, b, tol) -> bool:
    """Relative-tolerance comparison of two numeric sympy values (complex allowed)."""
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return abs(a - b) <= tol * max(abs(a), abs(b))
    va, vb = sp.N(a, 30), sp.N(b, 30)
    if not (va.is_number and vb.is_number) or va.has(sp.nan, sp.zoo) or vb.has(sp.nan, sp.zoo):
        return False
    if va.has(sp.oo, -sp.oo) or vb.has(sp.oo, -sp.oo):
        return va == vb
    diff, scale = abs(va - vb), max(abs(va), abs(vb))
    if scale == 0:
        return True
    if diff <= tol * scale:
        if a.is_zero or b.is_zero:  # the relative rule above already forces an exact zero here
            return bool(sp.simplify(a - b) == 0)
        return True
    return False


_SAMPLE_POINTS = [
    sp.Rational(n, d) for n, d in ((37, 100), (173, 100), (-61, 100), (29, 10), (-227, 100), (113, 50), (7, 13))
]


def expressions_equal(a, b, approximate: bool = False) -> bool:
    """Equality of two sympy expressions: exact or numeric for constants, sampled for symbols.

    `approximate` (a side was written as a decimal) widens the tolerance from ~exact to REL_TOL
    (numbers.py states the policy)."""
    tol = REL_TOL if approximate else EXACT_TOL
    if a == b:
        return True
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        return (
            isinstance(a, sp.MatrixBase)
            and isinstance(b, sp.MatrixBase)
            and a.shape == b.shape
            and all(expressions_equal(x, y, approximate) for x, y in zip(a, b))
        )
    fa = a.free_symbols | b.free_symbols  # "sin^2 x + cos^2 x" vs "1" differ in symbols
    if not fa:
        return _close(a, b, tol)
    rng = random.Random(0)
    symbols = sorted(fa, key=str)
    agreed = 0
    for point in range(len(_SAMPLE_POINTS)):
        subs = {
            s: _SAMPLE_POINTS[(point + k * 3) % len(_SAMPLE_POINTS)] + sp.Rational(rng.randint(0, 9), 97)
            for k, s in enumerate(symbols)
        }
        va, vb = a.evalf(30, subs=subs), b.evalf(30, subs=subs)
        if not (va.is_number and vb.is_number) or va.has(sp.nan, sp.zoo, sp.oo) or vb.has(sp.nan, sp.zoo, sp.oo):
            continue
        if not _close(va, vb, tol):
            return False
        agreed += 1
    return agreed >= 3 or bool(sp.simplify(a - b) == 0)


def constant_ratio(a, b):
    """The constant c with a = c*b (sampled at several points; c != 0), or None when there is none."""
    fa = a.free_symbols | b.free_symbols
    if not fa:
        return None
    symbols = sorted(fa, key=str)
    ratio = None
    agreed = 0
    for point in range(len(_SAMPLE_POINTS)):
        subs = {
            s: _SAMPLE_POINTS[(point + k * 3) % len(_SAMPLE_POINTS)] + sp.Rational(k, 89) for k, s in enumerate(symbols)
        }
        va, vb = sp.N(a.evalf(30, subs=subs)), sp.N(b.evalf(30, subs=subs))
        if not (va.is_number and vb.is_number) or va.has(sp.nan, sp.zoo, sp.oo) or vb.has(sp.nan, sp.zoo, sp.oo):
            continue
        if abs(va) < 1e-20 or abs(vb) < 1e-20:
            if abs(va) < 1e-20 and abs(vb) < 1e-20:
                continue
            return None
        r = va / vb
        if ratio is None:
            ratio = r
        elif not _close(ratio, r, SAMPLE_TOL):
            return None
        agreed += 1
    return ratio if agreed >= 3 and ratio is not None and ratio.is_real else None


def proportional(a, b) -> bool:
    """True when a = c*b for a nonzero constant c (two equations `a=0`, `b=0` say the same thing)."""
    if not (a.free_symbols | b.free_symbols):
        return a == 0 and b == 0
    return constant_ratio(a, b) is not None

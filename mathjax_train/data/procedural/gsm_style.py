"""GSM8K-style multi-step word problems with calculator annotations, written for this project.

Each template takes (rng, level) and returns (question, solution_lines, answer); `Methods` of several
line lists where it knows several ways (procedural/methods.py). Level L in 1..5
gives exactly L+1 annotated steps; every intermediate and final value is a positive integer.
Values are computed here with Python ints; tests re-check every ``<<expr=value>>`` with grading/calculator.py.
"""

from __future__ import annotations

import random
from typing import Callable

from mathjax_train.data.procedural import words
from mathjax_train.data.procedural.methods import Methods

Template = Callable[[random.Random, int], "tuple[str, list[str], int]"]


class Resample(Exception):
    """Raised by a template when the drawn numbers don't fit (e.g. no exact division); redraw."""


def _calc(expr: str, value: int, money: bool = False) -> str:
    """``3*4`` -> ``3 * 4 = <<3*4=12>>12`` (``$`` before the annotation for money)."""
    shown = expr
    for op in "*+-/":
        shown = shown.replace(op, f" {op} ")
    return f"{shown} = {'$' if money else ''}<<{expr}={value}>>{value}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _person(rng: random.Random):
    name, pron, pos = rng.choice(words.PEOPLE)
    return name, pron, pos, pron.capitalize()


def _divisors(n: int, lo: int, hi: int) -> list[int]:
    return [d for d in range(lo, hi + 1) if n % d == 0]


def shopping(rng: random.Random, level: int):
    kinds, coupon, change = {1: (1, 0, 1), 2: (2, 0, 0), 3: (2, 0, 1), 4: (3, 0, 1), 5: (3, 1, 1)}[level]
    name, pron, _, Pron = _person(rng)
    goods = rng.sample(words.GOODS, kinds)
    buys = [(g, rng.randint(2, 9), rng.randint(g[2], g[3])) for g in goods]
    parts = [f"{n} {g[1]} for ${p} each" for g, n, p in buys]
    q = [f"{name} goes to {rng.choice(words.STORES)} and buys {_join(parts)}."]
    sol, costs = [], []
    for g, n, p in buys:
        costs.append(n * p)
        sol.append(f"The {g[1]} cost {_calc(f'{n}*{p}', n * p, True)}.")
    amount = costs[0]
    if kinds > 1:
        amount = sum(costs)
        sol.append(f"Altogether the items cost {_calc('+'.join(map(str, costs)), amount, True)}.")
    if coupon:
        off = rng.randint(2, max(2, min(25, amount // 3)))
        q.append(f"{Pron} uses a coupon for ${off} off the total.")
        sol.append(f"With the coupon {pron} pays {_calc(f'{amount}-{off}', amount - off, True)}.")
        amount -= off
    if change:
        paid = (amount // 50 + 1 + rng.randint(0, 2)) * 50
        q.append(f"{Pron} hands the cashier ${paid}. How much change, in dollars, does {pron} get back?")
        sol.append(f"{Pron} gets back {_calc(f'{paid}-{amount}', paid - amount, True)} in change.")
        return " ".join(q), sol, paid - amount
    q.append(f"How much does {pron} spend in total, in dollars?")
    return " ".join(q), sol, amount


def travel(rng: random.Random, level: int):
    legs, remaining, days = {1: (1, 1, 0), 2: (2, 0, 0), 3: (2, 1, 0), 4: (3, 1, 0), 5: (3, 0, 1)}[level]
    name, pron, pos, Pron = _person(rng)
    vehicles = words.TRAVEL if not days else [v for v in words.TRAVEL if v[0] != "bike"]
    vehicle, verb = rng.choice(vehicles)
    runs = [(rng.randrange(10, 65, 5), rng.randint(1, 4)) for _ in range(legs)]
    parts = [f"at {s} miles per hour for {h} hour{'s' if h > 1 else ''}" for s, h in runs]
    lead = ", then " if legs == 2 else ", "
    text = lead.join(parts) if legs < 3 else f"{parts[0]}, then {parts[1]}, and finally {parts[2]}"
    q = [f"{name} {verb} {pos} {vehicle} {text}."]
    sol, dists = [], []
    for i, (s, h) in enumerate(runs):
        dists.append(s * h)
        label = "" if legs == 1 else f" on part {i + 1}"
        sol.append(f"{Pron} covers {_calc(f'{s}*{h}', s * h)} miles{label}.")
    dist = dists[0]
    if legs > 1:
        dist = sum(dists)
        sol.append(f"In total {pron} covers {_calc('+'.join(map(str, dists)), dist)} miles.")
    if remaining:
        trip = dist + rng.randint(5, 150)
        q.append(f"The whole journey is {trip} miles long. How many miles does {pron} still have to go?")
        sol.append(f"{Pron} still has {_calc(f'{trip}-{dist}', trip - dist)} miles to go.")
        return " ".join(q), sol, trip - dist
    if days:
        n = rng.randint(2, 7)
        total = dist * n
        per = _divisors(total, 10, 60)
        if not per:
            raise Resample
        m = rng.choice(per)
        q.append(
            f"{Pron} makes the same journey on {n} days, and the {vehicle} uses one gallon of fuel "
            f"every {m} miles. How many gallons of fuel does it use?"
        )
        sol.append(f"Over {n} days {pron} covers {_calc(f'{dist}*{n}', total)} miles.")
        sol.append(f"That uses {_calc(f'{total}/{m}', total // m)} gallons of fuel.")
        return " ".join(q), sol, total // m
    q.append(f"How many miles does {pron} cover in total?")
    return " ".join(q), sol, dist


def sharing(rng: random.Random, level: int):
    second, lose, eat = {1: (0, 0, 0), 2: (0, 1, 0), 3: (1, 0, 0), 4: (1, 1, 0), 5: (1, 1, 1)}[level]
    name, pron, pos, Pron = _person(rng)
    thing, box, boxes = rng.choice(words.SHAREABLES)
    c1, p1 = rng.randint(2, 9), rng.randint(6, 24)
    q = [f"{name} buys {c1} {boxes} of {thing} with {p1} {thing} in each {box}."]
    sol = [f"{Pron} buys {_calc(f'{c1}*{p1}', c1 * p1)} {thing}."]
    total = c1 * p1
    if second:
        c2, p2 = rng.randint(2, 6), rng.randint(5, 20)
        rel = rng.choice(words.RELATIVES)
        q.append(f"{pos.capitalize()} {rel} adds {c2} {boxes} with {p2} {thing} each.")
        sol.append(f"The {rel} adds {_calc(f'{c2}*{p2}', c2 * p2)} {thing}.")
        sol.append(f"Together they have {_calc(f'{total}+{c2 * p2}', total + c2 * p2)} {thing}.")
        total += c2 * p2
    if lose:
        friends = rng.randint(2, 8)
        options = [r for r in range(total % friends, total // 3, friends) if r >= 1]
        if not options:
            raise Resample
        lost = rng.choice(options[:6])
        q.append(f"{lost} of the {thing} get lost.")
        sol.append(f"After losing some there are {_calc(f'{total}-{lost}', total - lost)} {thing} left.")
        total -= lost
    else:
        options = _divisors(total, 2, 9)
        if not options:
            raise Resample
        friends = rng.choice(options)
    share = total // friends
    q.append(f"{'The rest' if lose else 'All of them'} are shared equally among {friends} children.")
    sol.append(f"Each child gets {_calc(f'{total}/{friends}', share)} {thing}.")
    if eat:
        gone = rng.randint(1, max(1, share - 1))
        if gone >= share:
            raise Resample
        q.append(f"Each child then gives away {gone} of their {thing}. How many {thing} does each child keep?")
        sol.append(f"Each child keeps {_calc(f'{share}-{gone}', share - gone)} {thing}.")
        return " ".join(q), sol, share - gone
    q.append(f"How many {thing} does each child get?")
    if level == 1 and (c1 % friends == 0 or p1 % friends == 0):  # split the boxes, or each box, first
        if c1 % friends == 0:
            per = [
                f"Each child gets {_calc(f'{c1}/{friends}', c1 // friends)} {boxes if c1 > friends else box}.",
                f"That is {_calc(f'{c1 // friends}*{p1}', share)} {thing}.",
            ]
        else:
            per = [
                f"Each child gets {_calc(f'{p1}/{friends}', p1 // friends)} {thing} from each {box}.",
                f"From {c1} {boxes} that is {_calc(f'{c1}*{p1 // friends}', share)} {thing}.",
            ]
        return " ".join(q), Methods(sol, per), share
    return " ".join(q), sol, share


def percentages(rng: random.Random, level: int):
    many, ship, tax, change = {1: (0, 0, 0, 0), 2: (1, 0, 0, 0), 3: (1, 1, 0, 0), 4: (1, 0, 1, 0), 5: (1, 0, 1, 1)}[
        level
    ]
    name, pron, _, Pron = _person(rng)
    item, items = rng.choice(words.SALE_ITEMS)
    price = rng.randrange(20, 420, 10)
    pct = rng.choice([5, 10, 15, 20, 25, 30, 40, 50])
    if price * pct % 100:
        raise Resample
    off = price * pct // 100
    sale = price - off
    q = [f"A {item} normally costs ${price}, and this week it is {pct}% off."]
    sol = [
        f"The discount is {_calc(f'{price}*{pct}/100', off, True)}.",
        f"On sale one {item} costs {_calc(f'{price}-{off}', sale, True)}.",
    ]
    amount = sale
    if not many:
        q.append(f"How much does the {item} cost on sale, in dollars?")
        return " ".join(q), sol, sale
    n = rng.randint(2, 6)
    q.append(f"{name} buys {n} {items} on sale.")
    sol.append(f"{Pron} pays {_calc(f'{sale}*{n}', sale * n, True)} for the {items}.")
    amount = sale * n
    if ship:
        fee = rng.randint(5, 30)
        q.append(f"Delivery costs ${fee}. How much does {pron} pay in total, in dollars?")
        sol.append(f"With delivery {pron} pays {_calc(f'{amount}+{fee}', amount + fee, True)}.")
        return " ".join(q), sol, amount + fee
    if not tax:
        q.append(f"How much does {pron} pay for them, in dollars?")
        return " ".join(q), sol, amount
    rates = [t for t in (5, 8, 10, 20, 25) if amount * t % 100 == 0]
    if not rates:
        raise Resample
    t = rng.choice(rates)
    added = amount * t // 100
    q.append(f"Sales tax of {t}% is added to the purchase.")
    sol.append(f"The tax is {_calc(f'{amount}*{t}/100', added, True)}.")
    sol.append(f"With tax the bill is {_calc(f'{amount}+{added}', amount + added, True)}.")
    amount += added
    if not change:
        q.append(f"How much does {pron} pay in total, in dollars?")
        return " ".join(q), sol, amount
    paid = (amount // 100 + 1 + rng.randint(0, 1)) * 100
    q.append(f"{Pron} pays with ${paid}. How much change, in dollars, does {pron} receive?")
    sol.append(f"{Pron} receives {_calc(f'{paid}-{amount}', paid - amount, True)} in change.")
    return " ".join(q), sol, paid - amount


def ages(rng: random.Random, level: int):
    people = rng.sample(words.PEOPLE, level + 1)
    ages_, q, sol = [rng.randint(4, 40)], [], []
    q.append(f"{people[0][0]} is {ages_[0]} years old.")
    for i in range(1, level + 1):
        prev, cur = ages_[-1], people[i][0]
        kind = rng.choice(["older", "younger", "times", "half"])
        if kind == "older":
            d = rng.randint(2, 15)
            val, rel, expr = prev + d, f"{d} years older than", f"{prev}+{d}"
        elif kind == "younger" and prev > 6:
            d = rng.randint(1, prev - 3)
            val, rel, expr = prev - d, f"{d} years younger than", f"{prev}-{d}"
        elif kind == "times" and prev * 2 <= 90:
            k = 2 if prev * 3 > 90 else rng.choice([2, 3])
            val, rel, expr = prev * k, f"{'twice' if k == 2 else 'three times'} as old as", f"{prev}*{k}"
        elif kind == "half" and prev % 2 == 0 and prev >= 4:
            val, rel, expr = prev // 2, "half as old as", f"{prev}/2"
        else:
            d = rng.randint(2, 9)
            val, rel, expr = prev + d, f"{d} years older than", f"{prev}+{d}"
        q.append(f"{cur} is {rel} {people[i - 1][0]}.")
        sol.append(f"{cur} is {_calc(expr, val)} years old.")
        ages_.append(val)
    if rng.random() < 0.5:
        m = rng.randint(2, 20)
        last = people[-1][0]
        q.append(f"How old will {last} be in {m} years?")
        sol.append(f"In {m} years {last} will be {_calc(f'{ages_[-1]}+{m}', ages_[-1] + m)} years old.")
        return " ".join(q), sol, ages_[-1] + m
    q.append("What is the sum of their ages?")
    sol.append(f"Together they are {_calc('+'.join(map(str, ages_)), sum(ages_))} years old.")
    return " ".join(q), sol, sum(ages_)


def earnings(rng: random.Random, level: int):
    bonus, spend, weeks, split = {1: (0, 0, 0, 0), 2: (1, 0, 0, 0), 3: (1, 1, 0, 0), 4: (1, 1, 1, 0), 5: (1, 1, 1, 1)}[
        level
    ]
    name, pron, _, Pron = _person(rng)
    wage, hours, days = rng.randint(8, 30), rng.randint(2, 8), rng.randint(2, 6)
    q = [
        f"{name} earns ${wage} an hour {rng.choice(words.JOBS)}. {Pron} works {hours} hours a day, {days} days a week."
    ]
    daily, week = wage * hours, wage * hours * days
    sol = [
        f"Each day {pron} earns {_calc(f'{hours}*{wage}', daily, True)}.",
        f"Each week {pron} earns {_calc(f'{daily}*{days}', week, True)}.",
    ]
    amount = week
    if bonus:
        b = rng.randrange(10, 110, 5)
        q.append(f"{Pron} also gets a ${b} bonus every week.")
        sol.append(f"With the bonus that is {_calc(f'{amount}+{b}', amount + b, True)} a week.")
        amount += b
    if spend:
        s = rng.randint(5, amount // 2)
        q.append(f"{Pron} spends ${s} a week on food.")
        sol.append(f"{Pron} keeps {_calc(f'{amount}-{s}', amount - s, True)} a week.")
        amount -= s
    if weeks:
        w = rng.randint(2, 8)
        q.append(f"{Pron} saves what is left for {w} weeks.")
        sol.append(f"After {w} weeks {pron} has {_calc(f'{amount}*{w}', amount * w, True)}.")
        amount *= w
    if split:
        ks = _divisors(amount, 2, 6)
        if not ks:
            raise Resample
        k = rng.choice(ks)
        q.append(f"{Pron} splits the savings equally among {k} accounts. How many dollars go into each account?")
        sol.append(f"Each account gets {_calc(f'{amount}/{k}', amount // k, True)}.")
        return " ".join(q), sol, amount // k
    ask = {1: "earn in a week", 2: "earn in a week", 3: "keep each week", 4: "have after those weeks"}
    q.append(f"How many dollars does {pron} {ask[level]}?")
    return " ".join(q), sol, amount


def farm(rng: random.Random, level: int):
    name, pron, _, Pron = _person(rng)
    crop, fruit = rng.choice(words.CROPS)
    rows, per_row, each = rng.randint(2, 12), rng.randint(3, 15), rng.randint(4, 30)
    plants, total = rows * per_row, rows * per_row * each
    q = [f"{name} has {rows} rows of {crop} with {per_row} in each row, and each one gives {each} {fruit}."]
    sol = [
        f"There are {_calc(f'{rows}*{per_row}', plants)} {crop}.",
        f"They give {_calc(f'{plants}*{each}', total)} {fruit}.",
    ]
    if level == 1:
        q.append(f"How many {fruit} does {pron} harvest?")
        return " ".join(q), sol, total
    box = rng.randint(4, 12)
    if level == 2:
        bad = rng.randint(1, total // 4)
    else:
        options = [r for r in range(total % box, total // 4, box) if r >= 1]
        if not options:
            raise Resample
        bad = rng.choice(options[:6])
    q.append(f"{bad} of the {fruit} are spoiled.")
    good = total - bad
    sol.append(f"{Pron} has {_calc(f'{total}-{bad}', good)} good {fruit}.")
    if level == 2:
        q.append(f"How many good {fruit} are there?")
        return " ".join(q), sol, good
    q.append(f"{Pron} packs the good {fruit} into boxes of {box}.")
    n = good // box
    sol.append(f"{Pron} fills {_calc(f'{good}/{box}', n)} boxes.")
    if level == 3:
        q.append("How many boxes does " + pron + " fill?")
        return " ".join(q), sol, n
    price = rng.randint(3, 25)
    sales = n * price
    sol.append(f"Selling them brings in {_calc(f'{n}*{price}', sales, True)}.")
    if level == 4:
        q.append(f"{Pron} sells each box for ${price}. How many dollars does {pron} make?")
        return " ".join(q), sol, sales
    cost = rng.randint(1, max(1, sales - 1))
    if cost >= sales:
        raise Resample
    q.append(
        f"{Pron} sells each box for ${price} and spent ${cost} on seeds and water. "
        f"What is {pron} profit in dollars?".replace(f"is {pron} profit", "is the profit")
    )
    sol.append(f"The profit is {_calc(f'{sales}-{cost}', sales - cost, True)}.")
    return " ".join(q), sol, sales - cost


TEMPLATES: dict[str, Template] = {
    "shopping": shopping,
    "travel": travel,
    "sharing": sharing,
    "percentages": percentages,
    "ages": ages,
    "earnings": earnings,
    "farm": farm,
}

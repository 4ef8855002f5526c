#!/usr/bin/env python3
"""Helpers of scripts/prometheus-test.sh (needs PyYAML; the script provides it).

  promcheck.py rules  <helm-template-output.yaml> <out-rules.yaml>
      Writes the `spec` of the chart's PrometheusRule as a plain Prometheus rules
      file (for promtool and for the test Prometheus) and prints the `job`
      label the controller alerts select (the chart's metrics Service name).

  promcheck.py exprs  <out-rules.yaml> <dashboard.json>
      Prints, one JSON object a line, every PromQL expression to evaluate live
      (see "What is queried" below).

  promcheck.py query  <prometheus base URL> <exprs.jsonl> <deadline seconds>
      Queries every expression through /api/v1/query until all of them return
      data or the deadline passes; prints one line per expression and, last,
      `<passed> <failed>`. Exit status 1 when any failed.

  promcheck.py rules-health <prometheus base URL> <out-rules.yaml>
      Checks that the test Prometheus loaded every rule of the file and that
      each one evaluates without error (`health` of /api/v1/rules).

  promcheck.py selftest
      Unit tests of the expression splitting below.

What is queried
---------------
Dashboard (charts/colloquy/dashboards/colloquy.json): every `expr` of every
panel target (rows' nested panels included), and every `label_values(<series
selector>, <label>)` template-variable query as `count by (<label>) (<series
selector>)`. Grafana variables are replaced before querying (GRAFANA_VARS):
`$__rate_interval`, `$__interval`, `$__range` (and their `${...}` forms) by
`1m`; every variable of the dashboard's `templating.list` (`$namespace`,
`${service}`, `${service:regex}`...) by `.*`, i.e. the "All" selection
(their `allValue`). An expression still containing `$` after that is a failure.

Alerts: an alert's `expr` is `<base> <comparison> <threshold>` and is naturally
empty while it does not fire, so the live check evaluates the base instead: the
expression is split at its top-level comparison operator (`>`, `<`, `>=`, `<=`,
`==`, `!=`, outside any (), {}, [] and string literal) and each side that is
not a number literal is queried; `absent(X)` is checked as X (absent is empty
exactly when X has data) and top-level `and`/`or`/`unless` operands are
checked one by one. The split works on PromQL tokens (strings, brackets,
identifiers), not on regular expressions, so label matchers such as `!=` or
`=~` inside {} and comparisons nested in function calls are left alone. The
full alert expression is queried too, where only an error fails (empty is
expected). Every query must return at least one sample whose value is not NaN
(histogram_quantile over no observations is NaN: that is "no data" too).
"""
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request

GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range", "__range_s")
COMPARISONS = (">=", "<=", "==", "!=", ">", "<")
SET_OPS = ("or", "and", "unless")  # lowest precedence first


# ---------------------------------------------------------------- rules
def load_rules_from_helm(path):
    import yaml

    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        sys.exit(f"expected exactly one PrometheusRule in {path}, found {len(rules)}")
    return rules[0]["spec"]


def cmd_rules(helm_out, out):
    import yaml

    spec = load_rules_from_helm(helm_out)
    with open(out, "w") as f:
        yaml.safe_dump({"groups": spec["groups"]}, f, sort_keys=False, width=1000)
    jobs = set()
    for g in spec["groups"]:
        for r in g["rules"]:
            jobs.update(re.findall(r'job="([^"]+)"', r["expr"]))
    if len(jobs) != 1:
        sys.exit(f"expected one job label in the controller alerts, found {sorted(jobs)}")
    print(jobs.pop())


# ---------------------------------------------------------------- PromQL splitting
def tokens(expr):
    """Yields (start, end, kind, text) for the tokens that matter at top level."""
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            yield i, j + 1, "str", expr[i : j + 1]
            i = j + 1
        elif c == "#":  # comment to end of line
            j = expr.find("\n", i)
            i = n if j < 0 else j
        elif c in "([{":
            yield i, i + 1, "open", c
            i += 1
        elif c in ")]}":
            yield i, i + 1, "close", c
            i += 1
        elif expr.startswith(COMPARISONS, i) and not expr.startswith("=~", i) and not expr.startswith("!~", i):
            op = next(o for o in COMPARISONS if expr.startswith(o, i))
            yield i, i + len(op), "cmp", op
            i += len(op)
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            yield i, j, "ident", expr[i:j]
            i = j
        else:
            i += 1


def top_level(expr):
    depth = 0
    for start, end, kind, text in tokens(expr):
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif depth == 0:
            yield start, end, kind, text


def strip_parens(expr):
    expr = expr.strip()
    while expr.startswith("("):
        depth = 0
        for start, _, kind, _ in tokens(expr):
            if kind == "open":
                depth += 1
            elif kind == "close":
                depth -= 1
                if depth == 0:
                    break
        if start != len(expr) - 1:
            break
        expr = expr[1:-1].strip()
    return expr


MODIFIER = re.compile(r"^\s*(bool\s+)?((on|ignoring)\s*\([^)]*\)\s*)?((group_left|group_right)\s*(\([^)]*\))?\s*)?")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(Inf|NaN)$", re.I)


def base_exprs(expr):
    """The sub-expressions of an alert expression that must return data."""
    expr = strip_parens(expr)
    for op in SET_OPS:
        cuts = [(s, e) for s, e, kind, text in top_level(expr) if kind == "ident" and text.lower() == op]
        if cuts:
            out, prev = [], 0
            for s, e in cuts:
                out.append(expr[prev:s])
                prev = e
            out.append(MODIFIER.sub("", expr[prev:]))
            return [b for part in out for b in base_exprs(part)]
    cmps = [(s, e) for s, e, kind, _ in top_level(expr) if kind == "cmp"]
    if cmps:
        s, e = cmps[-1]  # comparisons are left-associative: the last one is the top node
        lhs, rhs = expr[:s], MODIFIER.sub("", expr[e:])
        return [b for side in (lhs, rhs) if not NUMBER.match(strip_parens(side)) for b in base_exprs(side)]
    m = re.match(r"^absent(_over_time)?\s*\(", expr)
    if m and strip_parens(expr[m.end() - 1 :]) != expr[m.end() - 1 :]:
        return base_exprs(expr[m.end() - 1 :])
    return [" ".join(expr.split())]


def cmd_selftest():
    cases = {
        "sum(rate(a[5m])) / sum(rate(b[5m])) > 0.05": ["sum(rate(a[5m])) / sum(rate(b[5m]))"],
        'absent(up{job="x"} == 1)': ['up{job="x"}'],
        'max(x{ready!="true", a=~"b>c"}) > 0': ['max(x{ready!="true", a=~"b>c"})'],
        "histogram_quantile(0.99, sum by (le) (rate(h[5m])))\n  > 30": [
            "histogram_quantile(0.99, sum by (le) (rate(h[5m])))"
        ],
        "max by (a) (x{state=\"in_use\"} / ignoring (state) y) > 0.9": [
            'max by (a) (x{state="in_use"} / ignoring (state) y)'
        ],
        "a > 1 and on (x) b < 2 or c": ["a", "b", "c"],
        "a > bool 1": ["a"],
        "a > b": ["a", "b"],
        "(a > 1)": ["a"],
        "sum(x > 1)": ["sum(x > 1)"],
        "absent_over_time(x[5m])": ["x[5m]"],
        "vector(1)": ["vector(1)"],
    }
    bad = 0
    for expr, want in cases.items():
        got = base_exprs(expr)
        if got != want:
            print(f"FAIL base_exprs({expr!r}) = {got!r}, want {want!r}")
            bad += 1
    print(f"selftest: {len(cases) - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)


# ---------------------------------------------------------------- dashboard
def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def grafana_subst(expr, variables):
    for v in GRAFANA_INTERVALS:
        expr = re.sub(r"\$\{%s\}|\$%s\b" % (v, v), "1m", expr)
    for v in variables:
        expr = re.sub(r"\$\{%s(:[a-z]+)?\}|\$%s\b" % (re.escape(v), re.escape(v)), ".*", expr)
    return expr


def cmd_exprs(rules_path, dashboard_path):
    import yaml

    out = []
    with open(dashboard_path) as f:
        dash = json.load(f)
    variables = [v["name"] for v in dash.get("templating", {}).get("list", [])]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") != "query" or not q:
            continue
        m = re.match(r"^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", q, re.S)
        if not m:
            out.append({"name": f"dashboard variable ${v['name']}", "expr": q, "unsupported": True})
            continue
        out.append({"name": f"dashboard variable ${v['name']}", "expr": grafana_subst(f"count by ({m[2]}) ({m[1]})", variables)})
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append({"name": f"dashboard panel {p.get('title')!r} ({t.get('refId', '?')})", "expr": grafana_subst(t["expr"], variables)})
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    for g in rules["groups"]:
        for r in g["rules"]:
            name = r.get("alert") or r.get("record")
            out.append({"name": f"rule {name} (full expression, may be empty)", "expr": r["expr"].strip(), "allow_empty": True})
            for b in base_exprs(r["expr"]):
                out.append({"name": f"rule {name} base", "expr": b})
    for o in out:
        print(json.dumps(o))


# ---------------------------------------------------------------- live queries
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}


def check(base, item):
    """None when fine, else the problem."""
    if item.get("unsupported"):
        return "unsupported variable query (only label_values(selector, label) is checked)"
    if "$" in item["expr"]:
        return "unreplaced Grafana variable"
    res = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": item["expr"]}))
    if res.get("status") != "success":
        return f"error: {res.get('errorType', '')} {res.get('error', res)}"
    data = res["data"]
    if item.get("allow_empty"):
        return None
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    else:
        values = [s["value"][1] for s in data["result"]]
    if not values:
        return "empty result"
    if all(math.isnan(float(v)) for v in values):
        return f"only NaN ({len(values)} series)"
    return None


def cmd_query(base, exprs_path, deadline):
    with open(exprs_path) as f:
        items = [json.loads(line) for line in f if line.strip()]
    end = time.time() + float(deadline)
    problems = {}
    while True:
        problems = {i: p for i, item in enumerate(items) if (p := check(base, item))}
        if not problems or time.time() > end:
            break
        time.sleep(2)
    for i, item in enumerate(items):
        status = f"FAIL ({problems[i]})" if i in problems else "ok  "
        print(f"{status} {item['name']}: {' '.join(item['expr'].split())}")
    print(f"{len(items) - len(problems)} {len(problems)}")
    sys.exit(1 if problems else 0)


def cmd_rules_health(base, rules_path):
    import yaml

    with open(rules_path) as f:
        want = {r.get("alert") or r.get("record") for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    res = get(f"{base}/api/v1/rules")
    if res.get("status") != "success":
        sys.exit(f"/api/v1/rules: {res}")
    loaded = {r["name"]: r for g in res["data"]["groups"] for r in g["rules"]}
    bad = 0
    for name in sorted(want):
        r = loaded.get(name)
        if r is None:
            print(f"FAIL {name}: not loaded")
            bad += 1
        elif r.get("health") != "ok":
            print(f"FAIL {name}: health {r.get('health')!r} {r.get('lastError', '')}")
            bad += 1
        else:
            print(f"ok   {name}: loaded, health ok, state {r.get('state', '-')}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    cmds = {
        "rules": (cmd_rules, 2),
        "exprs": (cmd_exprs, 2),
        "query": (cmd_query, 3),
        "rules-health": (cmd_rules_health, 2),
        "selftest": (cmd_selftest, 0),
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) - 2 != cmds[sys.argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = cmds[sys.argv[1]]
    fn(*sys.argv[2:])

"""The report page as a Jinja2 template (autoescaped: every string from the tables is escaped
unless it is markup the report built, passed as ``Markup``). Everything is inline, so the page
opens offline: CSS here, figures as data URIs."""

from __future__ import annotations

import jinja2

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.8em;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.2em .35em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.wide{overflow-x:auto}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.notrun{color:#777}
.note{color:#555;font-size:.9em}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
.summary{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6em 1.2em}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5em 1em}
nav ul{columns:2;font-size:.9em}
.summary h2{margin-top:.3em}
td.label,th.label{text-align:left;white-space:nowrap}td.text,th.text{text-align:left}
.ci{display:block;color:#666;font-size:.8em;white-space:nowrap}
.nowrap td{white-space:nowrap}
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Representation collapse report</title>
<style>{{ css }}</style></head>
<body>
<h1>Representation collapse across sequential post-training</h1>
<p class="note">Tables: {{ tables_dir }}</p>
<div class="summary"><h2 id="summary">Summary</h2>
{% if summary %}<ul>{% for s in summary %}<li>{{ s }}</li>{% endfor %}</ul>
{% else %}<p class="note">Nothing to summarise: no stage effects, claims or checks.</p>{% endif %}
</div>
<nav><ul>{% for s in sections %}<li><a href="#s{{ loop.index }}">{{ s.title }}</a></li>{% endfor %}</ul></nav>
{% for s in sections %}
<h2 id="s{{ loop.index }}">{{ s.title }}</h2>
{% for w in s.warnings %}<p class="warn"><b>Warning:</b> {{ w }}</p>{% endfor %}
{{ s.body }}
{% endfor %}
</body></html>
"""

FALSIFICATION = """{% if rows %}<table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td>{{ r.check }}</td><td class="text">{{ r.metric }}</td>
<td>{{ r.statistic }}</td><td>{{ r.threshold }}</td><td class="{{ r.cls }}">{{ r.result }}</td>
<td class="text">{{ r.detail }}</td></tr>
{% endfor %}</table>{% else %}<p class="note">No checks ran.</p>{% endif %}"""

PROVENANCE = """{% if not provenance %}<p class="note">provenance.json missing: model, probe and
code versions unknown.</p>{% endif %}
{% for p in provenance %}<table>{% for k, v in p.rows %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>
{% endfor %}</table>
{% if p.sources %}<p>Probe corpus by source and license:</p><table><tr>
{% for k in source_keys %}<th>{{ k }}</th>{% endfor %}</tr>
{% for r in p.sources %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">The probe corpus's sources and licenses are not recorded (a store
extracted before they were).</p>{% endif %}{% endfor %}
{% if sinks is sameas true %}<p>Attention-sink tokens were excluded from every metric
(<code>sinks_excluded</code> is true in every row).</p>
{% elif sinks is sameas false %}<p><b>Attention-sink tokens were NOT excluded</b> from some
metrics (<code>sinks_excluded</code> false): covariance metrics may be dominated by them.</p>
{% else %}<p class="note">Whether attention-sink tokens were excluded is not recorded.</p>{% endif %}"""

FIGURES = """{% for f in figures %}{% if f.skipped %}<p class="note">{{ f.skipped }}</p>
{% else %}<figure><img alt="{{ f.name }}" src="data:image/png;base64,{{ f.data }}">
<figcaption>{{ f.title }}</figcaption></figure>{% endif %}{% endfor %}"""

TABLE = """<div class="wide"><table><tr>{% for h in head %}
<th{% if h.text %} class="text"{% endif %}>{{ h.name }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td{% if head[loop.index0].text %} class="text"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table></div>{% if more %}<p class="note">First {{ rows|length }} of {{ more }} rows;
all rows in the Parquet table.</p>{% endif %}"""

STAGE_TABLE = """<div class="wide"><table><tr>{% for h in head %}
<th{% if loop.index <= n_labels %} class="label"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r.labels %}<td class="label">{{ c }}</td>{% endfor %}
{% for mean, ci in r.cells %}<td>{{ mean }}{% if ci %}<span class="ci">{{ ci }}</span>{% endif %}</td>
{% endfor %}</tr>
{% endfor %}</table></div>"""

ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)


def render(template: str, **values: object) -> str:
    return ENV.from_string(template).render(**values)

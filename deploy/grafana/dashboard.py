#!/usr/bin/env python3
"""Writes egress-proxy.json, the Grafana dashboard for /metrics (docs/metrics.md).

Edit the panels here and run `python3 deploy/grafana/dashboard.py`; test/observability.test.ts
checks that every metric the dashboard queries is served.
"""
import json, os
panels=[]
y=0
pid=1
def ts(title, targets, unit='short', w=12, h=8, x=0, stack=False, desc=''):
    global pid
    p={"id":pid,"type":"timeseries","title":title,"description":desc,"datasource":{"type":"prometheus","uid":"${datasource}"},
       "gridPos":{"h":h,"w":w,"x":x,"y":y},
       "fieldConfig":{"defaults":{"unit":unit,"custom":{"stacking":{"mode":"normal" if stack else "none"},"fillOpacity":20 if stack else 5}},"overrides":[]},
       "options":{"legend":{"displayMode":"table","placement":"right","calcs":["lastNotNull"]},"tooltip":{"mode":"multi"}},
       "targets":[{"refId":chr(65+i),"expr":e,"legendFormat":l,"datasource":{"type":"prometheus","uid":"${datasource}"}} for i,(e,l) in enumerate(targets)]}
    pid+=1
    panels.append(p)
def stat(title, expr, unit='short', w=4, h=4, x=0, legend='', thresholds=None, desc=''):
    global pid
    p={"id":pid,"type":"stat","title":title,"description":desc,"datasource":{"type":"prometheus","uid":"${datasource}"},
       "gridPos":{"h":h,"w":w,"x":x,"y":y},
       "fieldConfig":{"defaults":{"unit":unit,"thresholds":{"mode":"absolute","steps":thresholds or [{"color":"green","value":None}]}},"overrides":[]},
       "options":{"reduceOptions":{"calcs":["lastNotNull"]},"colorMode":"background","textMode":"value_and_name" if legend else "auto"},
       "targets":[{"refId":"A","expr":expr,"legendFormat":legend,"datasource":{"type":"prometheus","uid":"${datasource}"}}]}
    pid+=1
    panels.append(p)
def row(title):
    global pid,y
    panels.append({"id":pid,"type":"row","title":title,"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y},"panels":[]})
    pid+=1; y+=1
S='{job=~"$job", instance=~"$instance"}'
def sel(extra=''):
    return '{job=~"$job", instance=~"$instance"%s}' % ((', '+extra) if extra else '')
DENY='decision="deny"'
NOTALLOW='decision!="allow"'
HTTP='kind="http"'
row("Overview")
red=[{"color":"green","value":None},{"color":"red","value":1}]
stat("Requests / s", f'sum(rate(egress_proxy_requests_total{sel()}[$__rate_interval]))', 'reqps', x=0)
stat("Denied / s", f'sum(rate(egress_proxy_requests_total{sel(DENY)}[$__rate_interval]))', 'reqps', x=4)
stat("Active connections", f'sum(egress_proxy_active_connections{sel()})', x=8)
stat("Open tunnels", f'sum(egress_proxy_active_tunnels{sel()})', x=12)
stat("Access log backlogged", f'max(egress_proxy_log_backlogged{sel()})', x=16, thresholds=red, desc='1 = the log destination is too slow; new requests are refused (log.when_full: fail_closed).')
stat("Egress nodes down", f'count(egress_proxy_egress_node_up{sel()} == 0) or vector(0)', x=20, thresholds=red)
y+=4
row("Traffic")
ts("Requests by decision", [(f'sum by (decision) (rate(egress_proxy_requests_total{sel()}[$__rate_interval]))','{{decision}}')], 'reqps', x=0, stack=True)
ts("Refusals by reason id", [(f'sum by (reason) (rate(egress_proxy_requests_total{sel(NOTALLOW)}[$__rate_interval]))','{{reason}}')], 'reqps', x=12, stack=True, desc='Reason ids are listed in docs/reasons.md; search the access log for the same id.')
y+=8
ts("Top rules", [(f'topk(10, sum by (rule) (rate(egress_proxy_requests_total{sel()}[$__rate_interval])))','{{rule}}')], 'reqps', x=0)
ts("Bytes relayed", [(f'sum by (direction) (rate(egress_proxy_bytes_total{sel()}[$__rate_interval]))','{{direction}}')], 'Bps', x=12)
y+=8
row("Latency")
for i,(name,title) in enumerate([('egress_proxy_time_to_first_byte_seconds','Time to first byte'),('egress_proxy_request_duration_seconds','Request duration (HTTP)')]):
    ts(title, [(f'histogram_quantile({q}, sum by (le) (rate({name}_bucket{sel(HTTP)}[$__rate_interval])))', f'p{int(q*100)}') for q in (0.5,0.95,0.99)], 's', x=12*i)
y+=8
row("Identity and inspection")
ts("Authentication failures by reason", [(f'sum by (reason) (rate(egress_proxy_auth_failures_total{sel()}[$__rate_interval]))','{{reason}}')], 'reqps', x=0, w=8, stack=True)
ts("DLP incidents by detector", [(f'sum by (detector, action) (rate(egress_proxy_dlp_incidents_total{sel()}[$__rate_interval]))','{{detector}} {{action}}')], 'reqps', x=8, w=8, stack=True)
ts("Interception certificates", [(f'sum(rate(egress_proxy_certificates_minted_total{sel()}[$__rate_interval]))','minted'),(f'sum(rate(egress_proxy_certificate_cache_hits_total{sel()}[$__rate_interval]))','cache hits')], 'ops', x=16, w=8)
y+=8
row("Health")
ts("Policy", [(f'max(increase(egress_proxy_policy_reloads_total{sel()}[$__range]))','reloads in range'),(f'max(increase(egress_proxy_policy_reload_failures_total{sel()}[$__range]))','failed reloads in range'),(f'max(egress_proxy_policy_errors{sel()})','errors now'),(f'max by (version) (egress_proxy_policy_info{sel()})','version {{version}}')], 'short', x=0, w=8)
ts("Access log", [(f'sum(egress_proxy_log_buffered_bytes{sel()})','buffered bytes'),(f'sum(rate(egress_proxy_logs_dropped_total{sel()}[$__rate_interval]))','dropped lines / s'),(f'sum(rate(egress_proxy_log_refused_requests_total{sel()}[$__rate_interval]))','refused while backlogged / s')], 'short', x=8, w=8)
ts("Egress nodes", [(f'min by (node) (egress_proxy_egress_node_up{sel()})','{{node}}')], 'short', x=16, w=8)
y+=8
ts("CPU", [(f'rate(egress_proxy_process_cpu_seconds_total{sel()}[$__rate_interval])','{{instance}}')], 'percentunit', x=0, w=8)
ts("Memory (RSS)", [(f'egress_proxy_process_resident_memory_bytes{sel()}','{{instance}}')], 'bytes', x=8, w=8)
ts("Event loop", [(f'egress_proxy_nodejs_eventloop_utilization{sel()}','busy {{instance}}'),(f'egress_proxy_nodejs_eventloop_lag_seconds{sel()}','lag (s) {{instance}}')], 'short', x=16, w=8)
y+=8
dash={
 "__inputs":[{"name":"DS_PROMETHEUS","label":"Prometheus","type":"datasource","pluginId":"prometheus","pluginName":"Prometheus"}],
 "title":"egress-proxy","uid":"egress-proxy","tags":["egress-proxy","proxy"],"timezone":"browser","schemaVersion":39,"version":1,
 "refresh":"30s","time":{"from":"now-1h","to":"now"},"editable":True,
 "description":"Requests, refusals by reason id, latency, identity and DLP, policy and access-log health of egress-proxy (metrics from GET /metrics on the admin listener).",
 "templating":{"list":[
   {"name":"datasource","type":"datasource","query":"prometheus","label":"Data source","current":{}},
   {"name":"job","type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},"query":"label_values(egress_proxy_requests_total, job)","refresh":2,"includeAll":True,"multi":True,"allValue":".*","current":{"text":"All","value":"$__all"}},
   {"name":"instance","type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},"query":"label_values(egress_proxy_requests_total{job=~\"$job\"}, instance)","refresh":2,"includeAll":True,"multi":True,"allValue":".*","current":{"text":"All","value":"$__all"}}]},
 "panels":panels}
json.dump(dash, open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'egress-proxy.json'), 'w'), indent=2)
print('panels:', len(panels))


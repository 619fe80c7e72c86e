// dcwatt dashboard: fleet and site pages over the collector's own HTTP API. Everything it
// loads comes from the collector (no external requests); charts use the vendored uPlot.
(function () {
  'use strict';

  var I18N = {
    en: {
      loading: 'Loading…', fleet: 'Sites', site: 'Site', sites_none: 'No site has reported yet.',
      live_ratio: 'Live power ratio', not_pue: 'not PUE', pue: 'PUE',
      facility_kw: 'Facility kW', it_kw: 'IT kW', racks_in_use: 'Racks in use',
      standard_racks: 'Standard racks', fp16: 'FP16 PFLOPS', alerts: 'Active alerts',
      status: 'Status', ok: 'OK', stale: 'Stale data', coverage: 'coverage',
      broker_lost: 'The collector has lost its MQTT broker: values are not updating.',
      unreachable: 'Cannot reach the collector: values shown are from {0}.',
      site_stale: 'No meter of this site is reporting: the values below are stale.',
      pue_windows: 'Power usage effectiveness (PUE) by window',
      trend: 'PUE trend', power_chart: 'Facility vs IT power', racks: 'Racks',
      racks_none: 'No rack known (racks come from agent births and [[racks]] budgets).',
      agents: 'Agents', node: 'Node', role: 'Role', rack: 'Rack', state: 'State', last_seen: 'Last seen',
      report_loading: 'Computing the report from the history…', report_failed: 'The report failed: {0}', report_zone: 'Days in the site\'s time zone ({0}).',
      sort: 'Sort', by_rack: 'by rack', by_util: 'by utilization', group: 'Group', group_none: 'none', group_row: 'by row',
      all_states: 'all states', problems: 'offline or stale', search: 'search nodes', agents_count: '{0} of {1} · {2} offline · {3} stale',
      alert_firing: 'firing', alert_pending: 'pending',
      energy_report: 'Energy report', from: 'From', to: 'To', show: 'Show', download_csv: 'Download CSV',
      facility_kwh: 'Facility energy (kWh)', it_kwh: 'IT energy (kWh)', period_pue: 'PUE of the period',
      minutes: 'minutes with data', no_alerts: 'No active alert.', alert: 'Alert', severity: 'Severity',
      since: 'Since', value: 'Value', nodes: 'Nodes', online: 'online', offline: 'offline', retired: 'retired',
      missing: 'Missing batches', power: 'Power', budget: 'Budget', utilization: 'Utilization',
      headroom: 'A/B failover headroom', u_space: 'U space', not_configured: 'not configured',
      no_history: 'No history yet for this range.', updated: 'Updated {0}',
      span: 'span', q_measured: 'measured', q_estimated: 'estimated', q_partial: 'partial', q_invalid: 'invalid', q_no_data: 'no data',
      q_filling: 'filling', filling_hint: 'The collector has less data than this window is long; the embedded history below already has the past.',
      category: 'category', facility: 'Facility', it: 'IT', dcie: 'DCiE', kpi_cue_market: 'CUE (market-based)', kpi_it_utilization: 'IT load', occupancy: 'Rack occupancy · installed of designed',
      targets: 'Targets', figure: 'Figure', target: 'Target', status: 'Status', projected: 'Projected year', source: 'Source',
      unconfirmed: 'unconfirmed', t_met: 'met', t_missed: 'missed', t_no_data: 'no data', t_on_track: 'on track',
      t_at_risk: 'at risk', t_will_exceed: 'will exceed', t_will_fall_short: 'will fall short',
      footer: 'PUE per ISO/IEC 30134-2: facility energy ÷ IT energy over a window, at one measurement category (PUE₁ UPS output, PUE₂ PDU output, PUE₃ IT input). The live power ratio is an indication, not PUE.',
      ago: '{0} ago', never: 'never', token_prompt: 'This collector requires its API token (http.token):',
      stranded_power: 'Stranded power', stranded_u: 'Stranded space', hosts: 'Hosts',
      region: 'Region', energy_weighted: 'energy-weighted', zones: 'Partial PUE by zone', zone: 'Zone'
    },
    zh: {
      loading: '加载中…', fleet: '站点', site: '站点', sites_none: '尚无站点上报数据。',
      live_ratio: '实时功率比', not_pue: '非 PUE', pue: '电能利用效率 (PUE)',
      facility_kw: '总用电 kW', it_kw: 'IT 用电 kW', racks_in_use: '在用机架',
      standard_racks: '标准机架', fp16: 'FP16 算力 PFLOPS', alerts: '活动告警',
      status: '状态', ok: '正常', stale: '数据过期', coverage: '覆盖率',
      broker_lost: '采集器与 MQTT 代理的连接已断开：数值未在更新。',
      unreachable: '无法连接采集器：显示的是 {0} 的数据。',
      site_stale: '本站点没有任何电表在上报：以下数值已过期。',
      pue_windows: '电能利用效率 (PUE)（按时间窗口）',
      trend: 'PUE 趋势', power_chart: '总用电与 IT 用电功率', racks: '机架',
      racks_none: '暂无机架（机架来自代理上线信息和 [[racks]] 配置）。',
      agents: '采集代理', node: '节点', role: '角色', rack: '机架', state: '状态', last_seen: '最后上报',
      report_loading: '正在从历史数据计算报表…', report_failed: '报表失败：{0}', report_zone: '按站点时区（{0}）计日。',
      sort: '排序', by_rack: '按机架', by_util: '按利用率', group: '分组', group_none: '不分组', group_row: '按列',
      all_states: '全部状态', problems: '离线或失联', search: '搜索节点', agents_count: '{0} / {1} · 离线 {2} · 失联 {3}',
      alert_firing: '告警中', alert_pending: '待定',
      energy_report: '能耗报表', from: '开始', to: '结束', show: '查询', download_csv: '下载 CSV',
      facility_kwh: '总耗电量 (kWh)', it_kwh: 'IT 设备耗电量 (kWh)', period_pue: '该时段 PUE',
      minutes: '分钟有数据', no_alerts: '无活动告警。', alert: '告警', severity: '级别',
      since: '开始于', value: '数值', nodes: '节点', online: '在线', offline: '离线', retired: '已退役',
      missing: '缺失批次', power: '功率', budget: '功率预算', utilization: '利用率',
      headroom: 'A/B 路切换余量', u_space: 'U 位', not_configured: '未配置',
      no_history: '该时间范围内暂无历史数据。', updated: '更新于 {0}',
      span: '时长占比', q_measured: '实测', q_estimated: '估算', q_partial: '部分覆盖', q_invalid: '无效', q_no_data: '无数据',
      q_filling: '数据积累中', filling_hint: '采集器的数据尚短于该窗口；下方的内置历史已包含过去的数据。',
      category: '类别', facility: '总用电', it: 'IT', dcie: 'DCiE', kpi_cue_market: 'CUE（市场法）', kpi_it_utilization: 'IT 负载率', occupancy: '上架率 · 已建/设计',
      targets: '目标', figure: '指标', target: '目标值', status: '状态', projected: '全年预测', source: '依据',
      unconfirmed: '未核实', t_met: '达标', t_missed: '未达标', t_no_data: '无数据', t_on_track: '有望达标',
      t_at_risk: '有风险', t_will_exceed: '将超标', t_will_fall_short: '将不达标',
      footer: 'PUE 按 ISO/IEC 30134-2 与 GB/T 32910.3 计算：一个时间窗口内数据中心总耗电量 ÷ IT 设备耗电量，IT 能耗取同一计量类别（PUE₁ UPS 输出、PUE₂ PDU 输出、PUE₃ IT 设备输入）。实时功率比仅供参考，不是 PUE。',
      ago: '{0}前', never: '从未', token_prompt: '此采集器需要 API 令牌 (http.token)：',
      stranded_power: '搁浅电力', stranded_u: '搁浅空间', hosts: '服务器',
      region: '区域', energy_weighted: '按能耗加权', zones: '分区局部 PUE', zone: '分区'
    }
  };

  var lang = localStorage.getItem('dcwatt.lang') ||
    ((navigator.language || '').toLowerCase().indexOf('zh') === 0 ? 'zh' : 'en');
  var POLL_MS = 5000;
  var timer = null;
  var lastOk = null;
  var charts = [];
  var chartRange = '24h';
  var chartsLoadedAt = 0;

  function t(key) {
    var s = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    for (var i = 1; i < arguments.length; i++) s = s.replace('{' + (i - 1) + '}', arguments[i]);
    return s;
  }
  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function num(v, d) {
    return (v == null || !isFinite(v)) ? '—' : Number(v).toFixed(d);
  }
  function kw(w) { return w == null ? '—' : num(w / 1000, 1); }
  function pct(x) { return x == null ? '—' : Math.round(x * 1000) / 10 + '%'; }
  function sub(c) { return c === 1 ? '₁' : c === 2 ? '₂' : c === 3 ? '₃' : ''; }
  function ago(ms) {
    if (!ms) return t('never');
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    var txt = s < 90 ? s + ' s' : s < 5400 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';
    return t('ago', txt);
  }
  // With http.token set, the API wants a bearer token: asked once, kept for the tab.
  function api(path, retried) {
    var headers = { Accept: 'application/json' };
    var token = sessionStorage.getItem('dcwatt.token');
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(path, { headers: headers }).then(function (r) {
      if (r.status === 401 && !retried) {
        var given = window.prompt(t('token_prompt'));
        if (given) {
          sessionStorage.setItem('dcwatt.token', given.trim());
          return api(path, true);
        }
      }
      if (!r.ok) {
        // The collector says why in {"error": ...}; keep it for the page.
        return r.json().catch(function () { return {}; }).then(function (body) {
          throw new Error('HTTP ' + r.status + (body && body.error ? ': ' + body.error : ''));
        });
      }
      return r.json();
    });
  }
  function $(id) { return document.getElementById(id); }

  function applyStatic() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    $('lang').textContent = lang === 'zh' ? 'English' : '中文';
    var nodes = document.querySelectorAll('[data-i18n]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = t(nodes[i].getAttribute('data-i18n'));
  }

  function banners(list) {
    $('banners').innerHTML = list.map(function (b) {
      return '<div class="banner ' + b[0] + '" id="' + b[1] + '">' + esc(b[2]) + '</div>';
    }).join('');
  }

  // A PUE value with its category, coverage and quality, as badges.
  function pueCell(w, key) {
    if (!w) return '<td class="num">—</td>';
    var q = w.quality;
    return '<td class="num" data-field="' + key + '" data-value="' + (w.value == null ? '' : w.value) +
      '" title="' + esc(w.reason || '') + '"><b class="pv">' + num(w.value, 3) + '</b><div class="badges">' +
      (w.category ? '<span class="badge">PUE' + sub(w.category) + '</span>' : '') +
      '<span class="badge ' + q + '">' + esc(t('q_' + q)) + '</span>' +
      '<span class="badge" title="' + esc(t('coverage')) + '">' + pct(w.coverage_it) + '</span></div></td>';
  }

  // ---- fleet page ----
  function fleet() {
    $('crumbs').innerHTML = '<span>' + esc(t('fleet')) + '</span>';
    return api('/healthz').then(function (health) {
      return Promise.all([health, api('/api/v1/sites'), api('/api/v1/alerts'),
        health.fleet ? api('/api/v1/fleet') : null]);
    }).then(function (r) {
      var health = r[0], sites = r[1].sites, alerts = r[2].alerts, region = r[3];
      var b = [];
      if (!health.broker_connected) b.push(['bad', 'broker-banner', t('broker_lost')]);
      banners(b);
      var regionHtml = '';
      if (region) {
        var rw = function (k) { var w = region.pue[k]; return w ? num(w.value, 3) + ' <span class="muted">(' + w.sites + ' ' + esc(t('fleet')) + (w.categories.length === 1 ? ', PUE' + sub(w.categories[0]) : '') + ')</span>' : '—'; };
        regionHtml = '<div class="card" id="region"><h2>' + esc(t('region')) + '</h2><div class="kpis">' +
          '<div class="kpi"><div class="v">' + rw('1h') + '</div><div class="l">' + esc(t('pue')) + ' 1h (' + esc(t('energy_weighted')) + ')</div></div>' +
          '<div class="kpi"><div class="v">' + rw('24h') + '</div><div class="l">' + esc(t('pue')) + ' 24h</div></div>' +
          '<div class="kpi"><div class="v">' + kw(region.facility_w) + '</div><div class="l">' + esc(t('facility_kw')) + '</div></div>' +
          '<div class="kpi"><div class="v">' + num(region.standard_racks_in_use, 1) + ' / ' + num(region.standard_racks, 1) + '</div><div class="l">' + esc(t('standard_racks')) + '</div></div>' +
          '<div class="kpi"><div class="v">' + num(region.fp16_eflops, 3) + '</div><div class="l">FP16 EFLOPS</div></div>' +
          '<div class="kpi"><div class="v">' + region.stale_sites.length + ' / ' + region.sites + '</div><div class="l">' + esc(t('stale')) + '</div></div>' +
          '</div></div>';
      }
      if (!sites.length) {
        $('view').innerHTML = '<h1>' + esc(t('fleet')) + '</h1>' + regionHtml + (region ? '' : '<p class="muted">' + esc(t('sites_none')) + '</p>');
        return;
      }
      var rows = sites.map(function (s) {
        var n = alerts.filter(function (a) { return a.site === s.site && a.state === 'firing'; }).length;
        var c = s.capacity;
        return '<tr id="site-' + esc(s.site) + '" class="site-row' + (s.stale ? ' stale' : '') + '" data-site="' + esc(s.site) + '">' +
          '<td><a href="#/site/' + encodeURIComponent(s.site) + '">' + esc(s.site) + '</a></td>' +
          '<td class="num" data-field="ratio" data-value="' + (s.power.ratio == null ? '' : s.power.ratio) + '">' +
          num(s.power.ratio, 3) + ' <span class="muted">(' + esc(t('not_pue')) + ')</span></td>' +
          pueCell(s.pue['1h'], 'pue-1h') + pueCell(s.pue['24h'], 'pue-24h') +
          '<td class="num">' + kw(s.power.facility_w) + '</td><td class="num">' + kw(s.power.it_w) + '</td>' +
          '<td class="num">' + c.racks_in_use + ' / ' + c.racks + '</td>' +
          '<td class="num">' + num(c.standard_racks_in_use, 1) + ' / ' + num(c.standard_racks, 1) + '</td>' +
          '<td class="num">' + num(c.fp16_pflops, 2) + '</td>' +
          '<td class="num">' + (n ? '<span class="badge sev-warning">' + n + '</span>' : '0') + '</td>' +
          '<td>' + (s.stale ? '<span class="badge invalid stale-warning">' + esc(t('stale')) + '</span>' : '<span class="badge measured">' + esc(t('ok')) + '</span>') + '</td></tr>';
      }).join('');
      $('view').innerHTML = '<h1>' + esc(t('fleet')) + '</h1>' + regionHtml + '<div class="card" style="overflow-x:auto"><table id="fleet"><thead><tr>' +
        '<th>' + esc(t('site')) + '</th><th class="num">' + esc(t('live_ratio')) + '</th>' +
        '<th class="num">' + esc(t('pue')) + ' 1h</th><th class="num">' + esc(t('pue')) + ' 24h</th>' +
        '<th class="num">' + esc(t('facility_kw')) + '</th><th class="num">' + esc(t('it_kw')) + '</th>' +
        '<th class="num">' + esc(t('racks_in_use')) + '</th><th class="num">' + esc(t('standard_racks')) + '</th>' +
        '<th class="num">' + esc(t('fp16')) + '</th><th class="num">' + esc(t('alerts')) + '</th><th>' + esc(t('status')) + '</th>' +
        '</tr></thead><tbody>' + rows + '</tbody></table></div>';
    });
  }

  // ---- site page ----
  function rackClass(u) {
    if (u == null) return 'u0';
    return u < 0.5 ? 'u1' : u < 0.7 ? 'u2' : u < 0.85 ? 'u3' : u < 1 ? 'u4' : 'u5';
  }
  // A rack whose meters are silent has no power, not 0 kW; with some silent, a lower bound.
  function rackPower(r) {
    if (r.power_w == null) return '<span class="badge no_data">' + esc(t('q_no_data')) + '</span>';
    return (r.quality === 'partial' ? '≥ ' : '') + kw(r.power_w) + ' kW';
  }
  function rackDetail(r) {
    var u = (r.u_total != null) ? (r.u_used == null ? '?' : r.u_used) + ' / ' + r.u_total + ' U' : t('not_configured');
    return '<b>' + esc(r.rack) + '</b> — ' + esc(t('power')) + ' ' + rackPower(r) +
      (r.reason ? ' (' + esc(r.reason) + ')' : '') + ' · ' +
      esc(t('budget')) + ' ' + (r.budget_w == null ? t('not_configured') : kw(r.budget_w) + ' kW') + ' · ' +
      esc(t('utilization')) + ' ' + pct(r.utilization) + ' · ' + esc(t('headroom')) + ' ' +
      (r.failover_headroom_w == null ? t('not_configured') : kw(r.failover_headroom_w) + ' kW') + ' · ' +
      esc(t('u_space')) + ' ' + esc(u) +
      (r.stranded_power_w ? ' · ' + esc(t('stranded_power')) + ' ' + kw(r.stranded_power_w) + ' kW' : '') +
      (r.stranded_u ? ' · ' + esc(t('stranded_u')) + ' ' + r.stranded_u + ' U' : '') +
      (r.hosts != null ? ' · ' + esc(t('hosts')) + ' ' + r.hosts : '') +
      (r.cpu_util != null ? ' · CPU ' + pct(r.cpu_util) : '') +
      (r.gpu_util != null ? ' · GPU ' + pct(r.gpu_util) : '');
  }

  function siteScaffold(id) {
    var today = new Date();
    // The report opens on the last seven days, already shown.
    var first = new Date(today.getTime() - 7 * 86400000);
    function d(x) { return x.getFullYear() + '-' + String(x.getMonth() + 1).padStart(2, '0') + '-' + String(x.getDate()).padStart(2, '0'); }
    var tomorrow = new Date(today.getTime() + 86400000);
    $('view').innerHTML =
      '<h1 id="site-title">' + esc(t('site')) + ' ' + esc(id) + '</h1>' +
      '<div class="card"><div class="kpis" id="kpis"></div></div>' +
      '<div class="card"><h2>' + esc(t('pue_windows')) + '</h2><div class="windows" id="windows"></div></div>' +
      '<div class="card" id="targets-card" style="display:none"><h2>' + esc(t('targets')) + '</h2><div id="targets"></div></div>' +
      '<div class="card"><div class="chart-tabs" id="chart-tabs">' +
      ['24h', '7d', '30d'].map(function (r) { return '<button type="button" data-range="' + r + '"' + (r === chartRange ? ' class="on"' : '') + '>' + r + '</button> '; }).join('') +
      '</div><div class="grid"><div><h2>' + esc(t('trend')) + '</h2><div class="chart" id="chart-pue"></div></div>' +
      '<div><h2>' + esc(t('power_chart')) + '</h2><div class="chart" id="chart-power"></div></div></div></div>' +
      '<div class="card" id="zones-card" style="display:none"><h2>' + esc(t('zones')) + '</h2><div id="zones"></div></div>' +
      '<div class="card"><h2>' + esc(t('racks')) + '</h2><div class="controls"><label>' + esc(t('sort')) +
      ' <select id="rack-sort"><option value="rack">' + esc(t('by_rack')) + '</option><option value="util">' + esc(t('by_util')) + '</option></select></label>' +
      ' <label>' + esc(t('group')) + ' <select id="rack-group"><option value="none">' + esc(t('group_none')) + '</option><option value="row">' + esc(t('group_row')) + '</option></select></label>' +
      '<span class="legend" id="rack-legend">' + [['u1', '< 50%'], ['u2', '50–70%'], ['u3', '70–85%'], ['u4', '85–100%'], ['u5', '≥ 100%'], ['u0', t('q_no_data')]].map(function (l) {
        return '<span class="rack-key ' + l[0] + '"></span>' + esc(l[1]);
      }).join(' ') + '</span></div>' +
      '<div id="racks"></div><div id="rack-detail" class="muted"></div></div>' +
      '<div class="grid"><div class="card"><h2>' + esc(t('alerts')) + '</h2><div id="alerts"></div></div>' +
      '<div class="card"><h2>' + esc(t('agents')) + '</h2><div class="controls">' +
      '<select id="agents-state"><option value="">' + esc(t('all_states')) + '</option><option value="offline,stale">' + esc(t('problems')) +
      '</option><option value="online">' + esc(t('online')) + '</option><option value="offline">' + esc(t('offline')) + '</option><option value="stale">' + esc(t('stale')) +
      '</option><option value="retired">' + esc(t('retired')) + '</option></select> <input type="search" id="agents-q" placeholder="' + esc(t('search')) + '"> ' +
      '<span id="agents-count" class="muted"></span> <button type="button" id="agents-first">«</button><button type="button" id="agents-next">»</button></div>' +
      '<div id="agents" style="max-height:360px;overflow:auto"></div></div></div>' +
      '<div class="card"><h2>' + esc(t('energy_report')) + '</h2><form class="report" id="report">' +
      '<label>' + esc(t('from')) + '<input type="date" id="report-from" value="' + d(first) + '"></label>' +
      '<label>' + esc(t('to')) + '<input type="date" id="report-to" value="' + d(tomorrow) + '"></label>' +
      '<button type="submit">' + esc(t('show')) + '</button><a id="report-csv" href="#">' + esc(t('download_csv')) + '</a></form>' +
      '<div class="report-out" id="report-out"></div></div>';
    $('chart-tabs').addEventListener('click', function (e) {
      var r = e.target.getAttribute && e.target.getAttribute('data-range');
      if (!r) return;
      chartRange = r;
      var bs = $('chart-tabs').querySelectorAll('button');
      for (var i = 0; i < bs.length; i++) bs[i].className = bs[i].getAttribute('data-range') === r ? 'on' : '';
      loadCharts(id);
    });
    $('report').addEventListener('submit', function (e) { e.preventDefault(); report(id); });
    // The first report waits for the site's own date (startReport): the browser's may be
    // a day off the site's.
    agentsPage = { cursor: null };
    var again = function () { agentsPage = { cursor: null }; agents(id); };
    $('agents-state').addEventListener('change', again);
    $('agents-q').addEventListener('input', again);
    $('agents-first').addEventListener('click', again);
    $('agents-next').addEventListener('click', function () {
      if (!agentsPage.next) return;
      agentsPage.cursor = agentsPage.next;
      agents(id);
    });
    var redraw = function () { drawRacks(lastRacks); };
    $('rack-sort').addEventListener('change', redraw);
    $('rack-group').addEventListener('change', redraw);
    $('racks').addEventListener('click', function (e) {
      var el = e.target.closest ? e.target.closest('.rack') : null;
      if (!el) return;
      var prev = document.querySelectorAll('.rack.sel');
      for (var i = 0; i < prev.length; i++) prev[i].classList.remove('sel');
      el.classList.add('sel');
      $('rack-detail').innerHTML = el.getAttribute('data-detail');
    });
    $('report-csv').addEventListener('click', function (e) {
      // A plain link cannot carry the bearer token: fetch the file and hand it over.
      var token = sessionStorage.getItem('dcwatt.token');
      if (!token) return;
      e.preventDefault();
      var link = $('report-csv');
      fetch(link.getAttribute('href'), { headers: { Authorization: 'Bearer ' + token } })
        .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.blob(); })
        .then(function (blob) {
          var a = document.createElement('a');
          a.href = URL.createObjectURL(blob);
          a.download = link.getAttribute('download');
          a.click();
          setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
        })
        .catch(function (err) { $('report-out').textContent = String(err.message || err); });
    });
    reportLink(id);
  }

  // A YYYY-MM-DD date n days on.
  function addDays(date, n) {
    var p = date.split('-').map(Number);
    var x = new Date(Date.UTC(p[0], p[1] - 1, p[2]) + n * 86400000);
    return x.getUTCFullYear() + '-' + String(x.getUTCMonth() + 1).padStart(2, '0') + '-' + String(x.getUTCDate()).padStart(2, '0');
  }
  // Sets the report to the last seven days in the site's time zone (its `local_date`,
  // else the browser's) and shows it, once per site page.
  function startReport(id, s) {
    var form = $('report');
    if (!form || form.getAttribute('data-started')) return;
    form.setAttribute('data-started', '1');
    if (s.local_date) {
      $('report-from').value = addDays(s.local_date, -7);
      $('report-to').value = addDays(s.local_date, 1);
    }
    report(id);
  }

  function reportQuery(id) {
    // Local dates, which the collector reads in the site's time zone (not the browser's).
    return '/api/v1/sites/' + encodeURIComponent(id) + '/energy?from=' + encodeURIComponent($('report-from').value) +
      '&to=' + encodeURIComponent($('report-to').value);
  }
  function reportLink(id) {
    $('report-csv').setAttribute('href', reportQuery(id) + '&format=csv');
    $('report-csv').setAttribute('download', 'dcwatt-' + id + '-energy.csv');
  }
  function report(id) {
    reportLink(id);
    $('report-out').innerHTML = '<p class="muted" id="report-loading">' + esc(t('report_loading')) + '</p>';
    api(reportQuery(id)).then(function (e) {
      $('report-out').innerHTML = '<div class="kpis">' +
        '<div class="kpi"><div class="v" id="report-facility">' + num(e.facility_kwh, 1) + '</div><div class="l">' + esc(t('facility_kwh')) + '</div></div>' +
        '<div class="kpi"><div class="v" id="report-it">' + num(e.it_kwh, 1) + '</div><div class="l">' + esc(t('it_kwh')) + '</div></div>' +
        '<div class="kpi"><div class="v" id="report-pue">' + num(e.pue, 3) + '</div><div class="l">' + esc(t('period_pue')) + ' ' +
        (e.category ? '<span class="badge">PUE' + sub(e.category) + '</span>' : '') + '<span class="badge ' + e.quality + '">' + esc(t('q_' + e.quality)) + '</span>' +
        '<span class="badge">' + esc(t('coverage')) + ' ' + pct(e.coverage_it) + '</span></div></div>' +
        '<div class="kpi"><div class="v">' + e.minutes + '</div><div class="l">' + esc(t('minutes')) + '</div></div></div>' +
        (e.reason ? '<p class="muted">' + esc(e.reason) + '</p>' : '') +
        '<p class="muted" id="report-zone">' + esc(t('report_zone', e.time_zone || 'UTC')) + '</p>';
    }).catch(function (err) {
      $('report-out').innerHTML = '<p class="bad" id="report-error">' + esc(t('report_failed', String(err.message || err))) + '</p>';
    });
  }

  function chart(el, range, times, series, colors, unit) {
    if (!window.uPlot) return;
    if (!times.length) { el.innerHTML = '<p class="muted">' + esc(t('no_history')) + '</p>'; return; }
    el.innerHTML = '';
    var opts = {
      width: Math.max(300, el.clientWidth || 500), height: 240,
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: colors[i], width: 2, spanGaps: false, value: function (u, v) { return v == null ? '—' : v.toFixed(unit === 'kW' ? 1 : 3); } };
      })),
      axes: [{}, { label: unit }],
      scales: { x: { time: true, range: function () { return range; } } }
    };
    var data = [times.map(function (x) { return x / 1000; })].concat(series.map(function (s) { return s.values; }));
    charts.push(new window.uPlot(opts, data, el));
  }

  function loadCharts(id) {
    chartsLoadedAt = Date.now();
    var step = { '24h': '15m', '7d': '2h', '30d': '12h' }[chartRange];
    var span = { '24h': 86400, '7d': 7 * 86400, '30d': 30 * 86400 }[chartRange];
    var range = [Date.now() / 1000 - span, Date.now() / 1000];
    var base = '/api/v1/sites/' + encodeURIComponent(id) + '/history?from=-' + chartRange + '&step=' + step;
    return Promise.all([
      api(base + '&series=pue&window=step'),
      api(base + '&series=facility_w'),
      api(base + '&series=it_w')
    ]).then(function (r) {
      charts.forEach(function (c) { c.destroy(); });
      charts = [];
      chart($('chart-pue'), range, r[0].time, [{ label: 'PUE', values: r[0].value }], ['#1f5fbf'], 'PUE');
      // Facility and IT on one time axis.
      var times = Array.from(new Set(r[1].time.concat(r[2].time))).sort(function (a, b) { return a - b; });
      function align(h) {
        var m = {};
        h.time.forEach(function (x, i) { m[x] = h.value[i] == null ? null : h.value[i] / 1000; });
        return times.map(function (x) { return x in m ? m[x] : null; });
      }
      chart($('chart-power'), range, times, [{ label: t('facility'), values: align(r[1]) }, { label: t('it'), values: align(r[2]) }], ['#c62828', '#2e7d32'], 'kW');
    }).catch(function () {
      $('chart-pue').innerHTML = '<p class="muted">' + esc(t('no_history')) + '</p>';
    });
  }

  // The figures beyond PUE of one window, each with its value, unit and quality; those
  // without their meters or settings are left out (their reason is in the API).
  var KPI_SHOWN = [
    ['wue', 'WUE', function (v) { return num(v, 2) + ' L/kWh'; }],
    ['cue', 'CUE', function (v) { return num(v, 3) + ' kg/kWh'; }],
    ['cue_market', null, function (v) { return num(v, 3) + ' kg/kWh'; }],
    ['ref', 'REF', pct],
    ['erf', 'ERF', pct],
    ['ere', 'ERE', function (v) { return num(v, 3); }],
    ['it_utilization', null, pct]
  ];
  function beyondPue(k) {
    if (!k) return '';
    var shown = KPI_SHOWN.filter(function (d) { return k[d[0]] && k[d[0]].value != null; });
    if (!shown.length) return '';
    return '<div class="beyond">' + shown.map(function (d) {
      var f = k[d[0]];
      return '<span class="badge kpi-' + d[0] + ' ' + f.quality + '" data-kpi="' + d[0] + '" data-value="' + f.value +
        '" title="' + esc((t('q_' + f.quality) || f.quality) + (f.reason ? ': ' + f.reason : '')) + '">' +
        esc(d[1] || t('kpi_' + d[0])) + ' ' + d[2](f.value) + '</span>';
    }).join('') + '</div>';
  }

  // The site's targets against their live value, and the annual projection the collector
  // adds from its history (recomputed there at most once a minute).
  function targetValue(kpi, v) {
    if (v == null) return '—';
    if (kpi === 'pue') return num(v, 3);
    if (kpi === 'wue') return num(v, 2) + ' L/kWh';
    return pct(v);
  }
  function showTargets(targets) {
    $('targets-card').style.display = targets.length ? '' : 'none';
    if (!targets.length) return;
    $('targets').innerHTML = '<table><thead><tr><th>' + esc(t('figure')) + '</th><th class="num">' + esc(t('target')) +
      '</th><th class="num">' + esc(t('value')) + '</th><th>' + esc(t('status')) + '</th><th class="num">' + esc(t('projected')) +
      '</th><th>' + esc(t('source')) + '</th></tr></thead><tbody>' + targets.map(function (tv) {
        var p = tv.projection || {};
        var status = p.status || tv.status;
        return '<tr data-kpi="' + esc(tv.kpi) + '" data-status="' + esc(status) + '"><td>' + esc(tv.kpi.toUpperCase()) + '</td>' +
          '<td class="num">' + (tv.direction === 'at_most' ? '≤ ' : '≥ ') + targetValue(tv.kpi, tv.target) + '</td>' +
          '<td class="num">' + targetValue(tv.kpi, tv.value) + ' <span class="muted">' + esc(tv.window) + '</span></td>' +
          '<td><span class="badge ' + (status === 'on_track' || status === 'met' ? 'measured' : status === 'no_data' ? 'no_data' : 'partial') +
          '" title="' + esc(p.reason || '') + '">' + esc(t('t_' + status)) + '</span></td>' +
          '<td class="num">' + targetValue(tv.kpi, p.projected_annual) + '</td>' +
          '<td class="muted">' + esc(tv.source) + (tv.confirmed ? '' : ' <span class="badge partial">' + esc(t('unconfirmed')) + '</span>') + '</td></tr>';
      }).join('') + '</tbody></table>';
  }

  // An alert's value in its rule's unit, as the rack tiles show such values.
  function alertValue(a) {
    var v = a.value;
    if (v == null) return '—';
    switch (a.unit) {
      case 'pue': return num(v, 3);
      case 'share': return pct(v);
      case 'L/kWh': return num(v, 2) + ' L/kWh';
      case 'kg/kWh': return num(v, 3) + ' kg/kWh';
      case 'W': return kw(v) + ' kW';
      case '°C': return num(v, 1) + ' °C';
      case 's': return Math.round(v) + ' s';
      case 'state': return v >= 0.5 ? esc(t('offline')) : esc(t('online'));
      default: return num(v, 3);
    }
  }

  // The rack grid: sorted by id or by utilization (highest first), optionally grouped by
  // row (the rack id's part before its last separator or digits); redrawn only on change.
  var lastRacks = [], racksShown = '';
  function rackRow(id) {
    var m = String(id).match(/^(.*?)[-_.]?\d+$/);
    return m && m[1] ? m[1] : String(id);
  }
  function drawRacks(racks) {
    lastRacks = racks;
    var key = JSON.stringify(racks) + $('rack-sort').value + $('rack-group').value + lang;
    if (key === racksShown) return;
    racksShown = key;
    var list = racks.slice();
    if ($('rack-sort').value === 'util') {
      list.sort(function (a, b) { return (b.utilization == null ? -1 : b.utilization) - (a.utilization == null ? -1 : a.utilization); });
    }
    var tile = function (rk) {
      return '<div class="rack ' + rackClass(rk.utilization) + '" data-rack="' + esc(rk.rack) + '" data-util="' + (rk.utilization == null ? '' : rk.utilization) + '" data-detail="' + esc(rackDetail(rk)) +
        '" title="' + esc(rackDetail(rk).replace(/<[^>]+>/g, '')) + '"><div class="id">' + esc(rk.rack) + '</div>' +
        rackPower(rk) + '<br>' + pct(rk.utilization) + '</div>';
    };
    if (!list.length) { $('racks').innerHTML = '<p class="muted">' + esc(t('racks_none')) + '</p>'; return; }
    if ($('rack-group').value === 'row') {
      var groups = {}, order = [];
      list.forEach(function (rk) { var g = rackRow(rk.rack); if (!groups[g]) { groups[g] = []; order.push(g); } groups[g].push(rk); });
      order.sort();
      $('racks').innerHTML = order.map(function (g) {
        return '<div class="rack-group" data-group="' + esc(g) + '"><h3>' + esc(g) + '</h3><div class="racks">' + groups[g].map(tile).join('') + '</div></div>';
      }).join('');
    } else {
      $('racks').innerHTML = '<div class="racks">' + list.map(tile).join('') + '</div>';
    }
  }

  // The agents card: one page of nodes, problems first, filtered by state and search.
  var agentsPage = { cursor: null };
  var AGENTS_PAGE = 50;
  function agents(id) {
    var q = '/api/v1/sites/' + encodeURIComponent(id) + '/nodes?sort=problems&limit=' + AGENTS_PAGE;
    var st = $('agents-state') ? $('agents-state').value : '';
    var text = $('agents-q') ? $('agents-q').value.trim() : '';
    if (st) q += '&state=' + encodeURIComponent(st);
    if (text) q += '&q=' + encodeURIComponent(text);
    if (agentsPage.cursor) q += '&cursor=' + encodeURIComponent(agentsPage.cursor);
    return api(q).then(function (r) {
      agentsPage.next = r.next_cursor;
      $('agents-count').textContent = t('agents_count', r.nodes.length, r.total, r.counts.offline, r.counts.stale);
      $('agents-next').disabled = !r.next_cursor;
      $('agents').innerHTML = '<table id="agents-table"><thead><tr><th>' + esc(t('node')) + '</th><th>' + esc(t('role')) + '</th><th>' + esc(t('rack')) +
        '</th><th>' + esc(t('state')) + '</th><th>' + esc(t('last_seen')) + '</th></tr></thead><tbody>' + r.nodes.map(function (x) {
          return '<tr data-node="' + esc(x.node) + '"><td>' + esc(x.node) + '</td><td>' + esc(x.role || '') + '</td><td>' + esc(x.rack || '') + '</td><td class="node-state ' + x.state + '">' +
            esc(t(x.state)) + '</td><td>' + esc(ago(x.last_seen_ms)) + '</td></tr>';
        }).join('') + '</tbody></table>';
      return r;
    });
  }

  function site(id) {
    $('crumbs').innerHTML = '<a href="#/">' + esc(t('fleet')) + '</a> › <span>' + esc(id) + '</span>';
    if (!$('windows') || $('view').getAttribute('data-site') !== id) {
      siteScaffold(id);
      $('view').setAttribute('data-site', id);
      chartsLoadedAt = 0;
    }
    var enc = encodeURIComponent(id);
    return Promise.all([
      api('/healthz'), api('/api/v1/sites/' + enc), api('/api/v1/sites/' + enc + '/racks'),
      agents(id), api('/api/v1/alerts')
    ]).then(function (r) {
      var health = r[0], s = r[1], racks = r[2].racks;
      var alerts = r[4].alerts.filter(function (a) { return a.site === id; });
      var b = [];
      if (!health.broker_connected) b.push(['bad', 'broker-banner', t('broker_lost')]);
      if (s.stale) b.push(['warn', 'stale-banner', t('site_stale')]);
      banners(b);
      startReport(id, s);
      showTargets(s.targets || []);
      var c = s.capacity, n = s.nodes;
      function kpi(v, l, idAttr) { return '<div class="kpi"><div class="v"' + (idAttr ? ' id="' + idAttr + '"' : '') + '>' + v + '</div><div class="l">' + l + '</div></div>'; }
      $('kpis').innerHTML =
        kpi(num(s.power.ratio, 3), esc(t('live_ratio')) + ' (' + esc(t('not_pue')) + ')', 'kpi-ratio') +
        kpi(kw(s.power.facility_w), esc(t('facility_kw'))) + kpi(kw(s.power.it_w), esc(t('it_kw'))) +
        kpi(n.online + ' / ' + n.total, esc(t('nodes')) + ' ' + esc(t('online'))) +
        kpi(c.racks_in_use + ' / ' + c.racks, esc(t('racks_in_use'))) +
        kpi(num(c.standard_racks_in_use, 1) + ' / ' + num(c.standard_racks, 1), esc(t('standard_racks'))) +
        (c.occupancy != null ? kpi(pct(c.occupancy) + (c.installed_share != null ? ' · ' + pct(c.installed_share) : ''),
          esc(t('occupancy')), 'kpi-occupancy') : '') +
        kpi(num(c.fp16_pflops, 2), esc(t('fp16'))) + kpi(String(s.missing_batches), esc(t('missing')));
      // A window longer than the data the collector has so far is filling, not empty: say so.
      var live = Object.keys(s.pue).some(function (k) { return s.pue[k].value != null; });
      var quality = function (w) { return w.value == null && w.quality === 'no_data' && live ? 'filling' : w.quality; };
      $('windows').innerHTML = Object.keys(s.pue).map(function (k) {
        var w = Object.assign({}, s.pue[k]);
        w.quality = quality(w);
        if (w.quality === 'filling') { w.reason = t('filling_hint'); }
        var cls = w.quality === 'measured' ? 'trusted' : w.quality;
        return '<div class="pue ' + cls + '" data-window="' + k + '" data-value="' + (w.value == null ? '' : w.value) + '" title="' + esc(w.reason || '') + '">' +
          '<div class="l">' + esc(w.category ? w.label : 'PUE, ' + k) + '</div>' +
          '<div class="v">' + (w.value == null ? esc(t('q_' + w.quality)) : num(w.value, 3)) + '</div>' +
          '<div>' + (w.category ? '<span class="badge">PUE' + sub(w.category) + '</span>' : '') +
          '<span class="badge ' + w.quality + '">' + esc(t('q_' + w.quality)) + '</span>' +
          '<span class="badge">' + esc(t('coverage')) + ' ' + pct(w.coverage_it) + '</span>' +
          (w.span_share != null && w.span_share < 1 ? '<span class="badge span" data-span="' + w.span_share + '">' + esc(t('span')) + ' ' + pct(w.span_share) + '</span>' : '') +
          (w.dcie ? '<span class="badge">' + esc(t('dcie')) + ' ' + pct(w.dcie) + '</span>' : '') + '</div>' +
          beyondPue(w.kpis) + '</div>';
      }).join('');
      var zones = s.zones || [];
      $('zones-card').style.display = zones.length ? '' : 'none';
      $('zones').innerHTML = zones.length ? '<table><thead><tr><th>' + esc(t('zone')) + '</th>' +
        ['1m', '15m', '1h', '24h'].map(function (k) { return '<th class="num">pPUE ' + k + '</th>'; }).join('') + '</tr></thead><tbody>' +
        zones.map(function (z) {
          return '<tr><td>' + esc(z.zone) + '</td>' + ['1m', '15m', '1h', '24h'].map(function (k) {
            var w = z.ppue[k];
            if (!w && live) {
              return '<td class="num" title="' + esc(t('filling_hint')) + '"><span class="badge filling">' + esc(t('q_filling')) + '</span></td>';
            }
            return '<td class="num">' + (w ? num(w.value, 3) + ' <span class="badge ' + w.quality + '">' + esc(t('q_' + w.quality)) + '</span>' : '—') + '</td>';
          }).join('') + '</tr>';
        }).join('') + '</tbody></table>' : '';
      drawRacks(racks);
      // Firing first, then pending; each visibly what it is.
      alerts.sort(function (a, b) { return (a.state === 'firing' ? 0 : 1) - (b.state === 'firing' ? 0 : 1); });
      $('alerts').innerHTML = alerts.length ? '<table id="alerts-table"><thead><tr><th>' + esc(t('alert')) + '</th><th>' + esc(t('state')) + '</th><th>' + esc(t('severity')) + '</th><th class="num">' +
        esc(t('value')) + '</th><th>' + esc(t('since')) + '</th></tr></thead><tbody>' + alerts.map(function (a) {
          return '<tr class="alert-' + esc(a.state) + '" data-alert="' + esc(a.alert) + '"><td title="' + esc(a.summary || '') + '">' + esc(a.rule) + (a.target ? ' · ' + esc(a.target) : '') + '</td>' +
            '<td><span class="badge state-' + esc(a.state) + '">' + esc(t('alert_' + a.state)) + '</span>' + (a.no_data ? ' <span class="badge no_data" title="' + esc(a.suppressed || '') + '">' + esc(t('q_no_data')) + '</span>' : '') + '</td>' +
            '<td><span class="badge sev-' + esc(a.severity) + '">' + esc(a.severity) + '</span></td><td class="num alert-value">' + alertValue(a) + '</td><td>' + esc(ago(a.since_ms)) + '</td></tr>';
        }).join('') + '</tbody></table>' : '<p class="muted">' + esc(t('no_alerts')) + '</p>';
      if (Date.now() - chartsLoadedAt > 60000) loadCharts(id);
    });
  }

  function route() {
    var h = location.hash || '#/';
    var m = h.match(/^#\/site\/(.+)$/);
    return m ? { page: 'site', id: decodeURIComponent(m[1]) } : { page: 'fleet' };
  }

  function refresh() {
    clearTimeout(timer);
    var r = route();
    var p = r.page === 'site' ? site(r.id) : fleet();
    return p.then(function () {
      lastOk = new Date();
      $('updated').textContent = t('updated', lastOk.toLocaleTimeString());
    }).catch(function (err) {
      banners([['bad', 'unreachable-banner', t('unreachable', lastOk ? lastOk.toLocaleTimeString() : t('never'))]]);
      if (window.console) console.warn('dcwatt: ' + (err && err.message ? err.message : err));
    }).then(function () {
      timer = setTimeout(refresh, POLL_MS);
    });
  }

  $('lang').addEventListener('click', function () {
    lang = lang === 'zh' ? 'en' : 'zh';
    localStorage.setItem('dcwatt.lang', lang);
    applyStatic();
    $('view').removeAttribute('data-site');
    $('view').innerHTML = '';
    refresh();
  });
  window.addEventListener('hashchange', function () { $('view').removeAttribute('data-site'); refresh(); });
  applyStatic();
  refresh();
})();

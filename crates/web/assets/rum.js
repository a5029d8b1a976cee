/*! streamcdn rum.js: the viewer's browser measures streamcdn edges for the router.
 *
 * Embed (the player page does when its edge knows a router):
 *   <script src="http://EDGE:8080/_streamcdn/rum.js" data-router="http://ROUTER:8082" async></script>
 *
 * Once the page has loaded and is idle:
 * 1. GET ROUTER/_streamcdn/rum/job (CORS) -> {"token", "targets": [{"edge", "url"}],
 *    "resolver_url" (optional), "beacon" (absolute URL, or a path on ROUTER)}.
 * 2. Each target in order: fetch it (no-store, CORS), read the whole body, and take
 *    its Resource Timing entry (the edges send Timing-Allow-Origin).
 * 3. Fetch resolver_url once, if given: the router's DNS sees which resolver asks
 *    for that name. Its result is not reported.
 * 4. One navigator.sendBeacon(beacon, JSON {"token", "results": [{"edge", "ok",
 *    "dns_ms", "connect_ms", "ttfb_ms", "total_ms", "bytes"}]}): a text/plain body,
 *    so no CORS preflight.
 * Progress is in window.streamcdnRum = {state: "idle"|"measuring"|"sent"|"failed",
 * job, results, error}. Nothing here ever throws into the page.
 */
(function () {
  'use strict';
  if (window.streamcdnRum) return; // embedded twice: measure once
  var rum = window.streamcdnRum = { state: 'idle', job: null, results: [], error: null };
  var IDLE_TIMEOUT_MS = 10000; // run even on a page that is never idle
  var RESOLVER_WAIT_MS = 5000;
  var ENTRY_WAIT_MS = 1000;

  function fail(reason) {
    rum.state = 'failed';
    rum.error = reason instanceof Error ? reason.message : String(reason);
  }

  var script = document.currentScript || document.querySelector('script[data-router]');
  var router = script && script.getAttribute('data-router');
  if (!router) return fail('no data-router attribute on the script');
  if (!window.fetch || !window.performance || !performance.getEntriesByName || !navigator.sendBeacon) {
    return fail('this browser lacks fetch, Resource Timing or sendBeacon');
  }
  router = router.replace(/\/+$/, '');

  function delay(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // Entries can reach the timeline a moment after the body has been read.
  function timingEntry(url, waited) {
    var entries = performance.getEntriesByName(url, 'resource');
    if (entries.length) return Promise.resolve(entries[entries.length - 1]);
    if (waited >= ENTRY_WAIT_MS) return Promise.resolve(null);
    return delay(50).then(function () { return timingEntry(url, waited + 50); });
  }

  // Milliseconds between two marks; 0 when the browser hides them.
  function span(from, to) {
    return from > 0 && to > from ? Math.round((to - from) * 10) / 10 : 0;
  }

  function measure(target) {
    var result = { edge: String(target.edge), ok: false, dns_ms: 0, connect_ms: 0, ttfb_ms: 0, total_ms: 0, bytes: 0 };
    var url;
    try {
      url = new URL(target.url, location.href).href; // the name its timing entry has
    } catch (e) {
      return Promise.resolve(result);
    }
    return fetch(url, { cache: 'no-store', mode: 'cors' })
      .then(function (response) {
        return response.arrayBuffer().then(function (body) {
          result.ok = response.ok;
          result.bytes = body.byteLength;
        });
      })
      .then(function () { return timingEntry(url, 0); })
      .then(function (entry) {
        if (!entry) return;
        result.dns_ms = span(entry.domainLookupStart, entry.domainLookupEnd);
        result.connect_ms = span(entry.connectStart, entry.connectEnd);
        result.ttfb_ms = span(entry.requestStart, entry.responseStart);
        result.total_ms = span(entry.startTime, entry.responseEnd);
      })
      .catch(function () { result.ok = false; })
      .then(function () { return result; });
  }

  function measureAll(targets) {
    return targets.reduce(function (done, target) {
      return done.then(function () {
        return measure(target).then(function (result) { rum.results.push(result); });
      });
    }, Promise.resolve());
  }

  function askResolver(url) {
    if (!url) return Promise.resolve();
    var asked = fetch(url, { cache: 'no-store', mode: 'no-cors' }).catch(function () {});
    return Promise.race([asked, delay(RESOLVER_WAIT_MS)]);
  }

  function run() {
    rum.state = 'measuring';
    var job;
    fetch(router + '/_streamcdn/rum/job', { mode: 'cors', cache: 'no-store' })
      .catch(function (e) { throw new Error('router unreachable: ' + e.message); })
      .then(function (response) {
        if (!response.ok) throw new Error('router answered ' + response.status);
        return response.json();
      })
      .then(function (answer) {
        if (!answer || typeof answer.token !== 'string' || !Array.isArray(answer.targets) || !answer.beacon) {
          throw new Error('malformed job');
        }
        job = rum.job = answer;
        return measureAll(job.targets);
      })
      .then(function () { return askResolver(job.resolver_url); })
      .then(function () {
        var beacon = new URL(job.beacon, router + '/').href;
        var body = JSON.stringify({ token: job.token, results: rum.results });
        if (!navigator.sendBeacon(beacon, body)) throw new Error('the browser refused the beacon');
        rum.state = 'sent';
      })
      .catch(fail);
  }

  function whenIdle() {
    if (window.requestIdleCallback) requestIdleCallback(run, { timeout: IDLE_TIMEOUT_MS });
    else setTimeout(run, 1000);
  }

  try {
    if (document.readyState === 'complete') whenIdle();
    else window.addEventListener('load', whenIdle);
  } catch (e) {
    fail(e);
  }
})();

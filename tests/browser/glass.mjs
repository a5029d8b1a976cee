// Glass to glass in headless Chromium: opens glass.html on the stream server's own origin
// (PAGE_URL is `<origin>/__glass__.html?src=...&lowLatency=1&seconds=60`; this script
// answers that path, /__glass__/hls.min.js and /__glass__/shaka-player.compiled.js itself,
// then stops intercepting so the stream's requests go to the network untouched), prints
// the page's summary as one JSON line every 500 ms and, when the page is done or stdin
// closes, a last line with every sample and the trace
// ({"final": true, ...summary, "samples": [[shown_at_ms, latency_ms], ...], "trace": [...]});
// with `debug=1` in PAGE_URL, the page's console (the player's log) goes to stderr.
// Certificates are not checked (the servers under test use self-signed ones).
// The hls.js is the one every edge serves (crates/web/assets/hls.min.js); Shaka Player is
// the npm package's compiled build (tests/browser/package.json pins it).
// Usage: node glass.mjs PAGE_URL [SECONDS] [--detached]
//   SECONDS: give up after this long (default 150); --detached: ignore stdin.
import { chromium } from 'playwright-core';
import { readFile } from 'node:fs/promises';

const [pageUrl, seconds] = [process.argv[2], Number(process.argv[3] || 150)];
const detached = process.argv.includes('--detached');
let watching = true;
if (!detached) {
  process.stdin.on('end', () => { watching = false; });
  process.stdin.resume();
}

const hlsJs = await readFile(new URL('../../crates/web/assets/hls.min.js', import.meta.url));
const shakaJs = await readFile(new URL('./node_modules/shaka-player/dist/shaka-player.compiled.js', import.meta.url));
const html = await readFile(new URL('./glass.html', import.meta.url));
const origin = new URL(pageUrl).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    '--ignore-certificate-errors'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true });
const page = await context.newPage();
page.on('pageerror', error => console.error('page error:', error.message));
if (new URL(pageUrl).searchParams.get('debug') === '1') page.on('console', message => console.error(message.text()));
await page.route(`${origin}/__glass__**`, route => {
  const path = new URL(route.request().url()).pathname;
  if (path === '/__glass__/hls.min.js') return route.fulfill({ body: hlsJs, contentType: 'text/javascript' });
  if (path === '/__glass__/shaka-player.compiled.js') return route.fulfill({ body: shakaJs, contentType: 'text/javascript' });
  return route.fulfill({ body: html, contentType: 'text/html; charset=utf-8' });
});
await page.goto(pageUrl);
await page.unrouteAll();

const deadline = Date.now() + seconds * 1000;
let summary = null;
while (watching && Date.now() < deadline) {
  summary = await page.evaluate(() => window.glass.summary());
  console.log(JSON.stringify(summary));
  if (summary.state === 'done' || summary.state === 'error') break;
  await new Promise(resolve => setTimeout(resolve, 500));
}
const last = await page.evaluate(() => ({ ...window.glass.summary(), samples: window.glass.samples, trace: window.glass.trace }));
console.log(JSON.stringify({ final: true, ...last }));
await browser.close();
process.exit(last.state === 'done' ? 0 : 1);

// Opens the operator dashboard in headless Chromium and prints, one JSON line every
// 500 ms, the text of each section (by id), the player's decoded frames and how many
// refreshes ran. Commands on stdin, one per line: `shot PATH` (full-page screenshot),
// `explain IP` and `purge URL` (fill and submit those forms). Runs until stdin closes
// or SECONDS pass. Used by crates/streamcdn/tests/dashboard.rs.
// Usage: node dashboard.mjs DASHBOARD_URL [SECONDS]
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const [pageUrl, seconds] = [process.argv[2], Number(process.argv[3] || 120)];
let watching = true;
const commands = [];
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', line => commands.push(line));
lines.on('close', () => { watching = false; });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.on('pageerror', error => console.error('page error:', error.message));
await page.goto(pageUrl);
const deadline = Date.now() + seconds * 1000;
while (watching && Date.now() < deadline) {
  while (commands.length) {
    const [verb, ...rest] = commands.shift().split(' ');
    const argument = rest.join(' ');
    if (verb === 'shot') await page.screenshot({ path: argument, fullPage: true });
    if (verb === 'explain') { await page.fill('#explain-ip', argument); await page.click('#explain-form button'); }
    if (verb === 'purge') { await page.fill('#purge-url', argument); await page.click('#purge-form button'); }
    console.log(JSON.stringify({ done: verb }));
  }
  const sample = await page.evaluate(() => {
    const text = id => { const node = document.getElementById(id); return node ? node.innerText : null; };
    const video = document.querySelector('video');
    const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      login: !document.getElementById('login').hidden,
      refreshes: Number(document.body.dataset.refreshes || 0),
      updated: text('updated'),
      participant: text('participant'),
      streams: text('streams'), recordings: text('recordings'), archive: text('archive'),
      nodes: text('nodes'), routing: text('routing'), federation: text('federation'),
      triggers: text('triggers'), player: text('now-playing'),
      frames: quality ? quality.totalVideoFrames : null,
    };
  });
  console.log(JSON.stringify(sample));
  await new Promise(resolve => setTimeout(resolve, 500));
}
await browser.close();

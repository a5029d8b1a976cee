// Opens a page in headless Chromium and prints what the tests watch, one JSON line every
// 500 ms: the <video>'s decoded frames and position, the page's #state text, #mode
// (webrtc or hls) and #errors
// list (the player page), and rum.js's window.streamcdnRum. Runs until stdin closes or
// SECONDS pass. Used by crates/streamcdn/tests/player_page.rs.
// Usage: node watch_page.mjs PAGE_URL [SECONDS]
import { chromium } from 'playwright-core';

const [pageUrl, seconds] = [process.argv[2], Number(process.argv[3] || 120)];
let watching = true;
process.stdin.on('end', () => { watching = false; });
process.stdin.resume();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage();
page.on('pageerror', error => console.error('page error:', error.message));
await page.goto(pageUrl);
const deadline = Date.now() + seconds * 1000;
while (watching && Date.now() < deadline) {
  const sample = await page.evaluate(() => {
    const video = document.querySelector('video');
    const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const state = document.getElementById('state');
    const mode = document.getElementById('mode');
    return {
      mode: mode ? mode.getAttribute('data-mode') : null,
      frames: quality ? quality.totalVideoFrames : null,
      time: video ? video.currentTime : null,
      state: state ? state.textContent : null,
      errors: Array.from(document.querySelectorAll('#errors li'), item => item.textContent),
      rum: window.streamcdnRum || null,
    };
  });
  console.log(JSON.stringify(sample));
  await new Promise(resolve => setTimeout(resolve, 500));
}
await browser.close();

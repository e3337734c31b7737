// Confab's two pages in real headless Chromium with every request to another host refused, as on
// a machine with no internet: GraphiQL must come up and answer a query, and neither page may
// trip its Content-Security-Policy or log anything to the console while it is used.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium, register, startConfab } from './confab.mjs';

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

let server;
let browser;

before(async () => {
  server = await startConfab();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/// A page that may reach only the server's origin, and a record of what went wrong on it:
/// requests to other hosts (refused), console messages, uncaught errors and CSP violations.
async function offlinePage() {
  const origin = new URL(server.url).origin;
  const context = await browser.newContext();
  const trouble = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    trouble.push(`request to another host: ${url}`);
    return route.abort('blockedbyclient');
  });
  // Reported from inside the page, before any of its scripts run.
  await context.exposeBinding('reportViolation', (_source, text) => trouble.push(text));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.reportViolation(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} ${e.sample}`);
    });
  });
  const page = await context.newPage();
  page.on('console', (message) => trouble.push(`console ${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => trouble.push(`uncaught: ${error.message}`));
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).host !== new URL(origin).host) trouble.push(`WebSocket to another host: ${ws.url()}`);
  });
  return { context, page, trouble };
}

test('GraphiQL works offline: signed in from the chat page\'s token, it runs a query', async () => {
  const user = await register(server, 'grace');
  const { context, page, trouble } = await offlinePage();
  await page.goto(server.url);
  await page.evaluate((token) => localStorage.setItem('confab.token', token), user.token);

  const response = await page.goto(`${server.url}/graphql`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'], /frame-ancestors 'none'/);
  await page.waitForSelector('.graphiql-container .graphiql-query-editor .CodeMirror');
  await page.click('.graphiql-query-editor .CodeMirror');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('{ me { username } }');
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(
    () => /"username":\s*"grace"/.test(document.querySelector('.result-window')?.textContent ?? ''),
    null,
    { timeout: 15_000 },
  );

  // The settings dialog adds an inline <style>: the page's nonce must cover it.
  await page.click('[aria-label="Open settings dialog"]');
  await page.waitForSelector('[role=dialog]');
  await page.keyboard.press('Escape');
  await page.waitForSelector('[role=dialog]', { state: 'detached' });
  // So does the editor's jump-to-line box (Alt-G), with two style attributes the policy hashes.
  await page.click('.graphiql-query-editor .CodeMirror');
  await page.keyboard.press('Alt+G');
  await page.waitForSelector('.CodeMirror-dialog input');
  await page.keyboard.press('Escape');
  await page.waitForSelector('.CodeMirror-dialog', { state: 'detached' });

  assert.deepEqual(trouble, []);
  await context.close();
});

test('the chat page signs in and goes live under its policy, offline', async () => {
  const { context, page, trouble } = await offlinePage();
  const response = await page.goto(server.url);
  assert.match(response.headers()['content-security-policy'], /frame-ancestors 'none'/);
  await page.fill('input[name=username]', 'heidi');
  await page.fill('input[name=password]', 'correct horse battery');
  await page.click('button[value=register]');
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForSelector('#status.live'); // over the WebSocket, which connect-src 'self' allows
  await page.fill('#new-room input[name=name]', 'csp');
  await page.click('#new-room button');
  await page.waitForSelector('#room-name:text("csp")');
  await page.fill('#composer textarea', 'no violations here');
  await page.press('#composer textarea', 'Enter');
  await page.waitForSelector('#messages li:has-text("no violations here")');
  assert.deepEqual(trouble, []);
  await context.close();
});

test('the pages refuse to be framed, even by a page of their own origin', async () => {
  const { context, page } = await offlinePage();
  await page.goto(`${server.url}/healthz`);
  // Without frame-ancestors 'none' and X-Frame-Options: DENY, a frame on the same origin would
  // load and be readable; with them, the browser shows an error page in its place.
  for (const path of ['/', '/graphql']) {
    const blocked = await page.evaluate(async (src) => {
      const frame = document.createElement('iframe');
      frame.src = src;
      document.body.append(frame);
      await new Promise((resolve) => frame.addEventListener('load', resolve, { once: true }));
      try {
        return frame.contentDocument === null || frame.contentDocument.body.innerHTML === '';
      } catch {
        return true;
      }
    }, path);
    assert.equal(blocked, true, `${path} was framed`);
  }
  await context.close();
});

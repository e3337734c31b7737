// Starts GraphiQL at /graphql. Served as a file, not inline, so the page's Content-Security-Policy
// can say script-src 'self' and nothing more.
//
// Same origin: HTTP for queries and mutations, graphql-transport-ws for subscriptions.
// The WebSocket signs in with the token the Confab page stored, or the one in the
// Headers tab ({"Authorization": "Bearer …"}).
(() => {
  // GraphiQL's dialogs add a <style> element (to stop the page scrolling behind them), tagged
  // with this global's value if it is set: the nonce the page's style-src allows.
  globalThis.__webpack_nonce__ = document.querySelector('meta[name=confab-style-nonce]').content;

  const http = location.origin + '/graphql';
  const ws = http.replace(/^http/, 'ws');
  let headerToken = null;
  const wsClient = graphqlWs.createClient({
    url: ws,
    connectionParams: () => {
      const token = headerToken || localStorage.getItem('confab.token');
      return token ? { authorization: token.startsWith('Bearer ') ? token : 'Bearer ' + token } : {};
    },
  });
  const fetcher = GraphiQL.createFetcher({ url: http, wsClient });
  const withHeaders = (params, options) => {
    const auth = options && options.headers && (options.headers.Authorization || options.headers.authorization);
    if (auth) headerToken = auth;
    return fetcher(params, options);
  };
  const saved = localStorage.getItem('confab.token');
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: withHeaders,
      defaultHeaders: saved ? JSON.stringify({ Authorization: 'Bearer ' + saved }, null, 2) : undefined,
      defaultQuery: '# Sign in with the login mutation, put the token in Headers, then:\n{\n  me { id username }\n  rooms(first: 10) { edges { node { id name memberCount } } }\n}\n',
    }),
  );
})();

// A certified OpenID provider for govbus's tests: the npm package oidc-provider, configured to
// issue JWT access tokens (RFC 9068) to confidential clients by the client credentials grant.
// Started by the test harness (govbus_harness::OidcProvider), never by govbus itself.
//
// Usage: node provider.mjs            (listens on a free loopback port, prints "listening <port>")
// Environment:
//   GOVBUS_OIDC_CLIENTS   JSON list of {"client_id": …, "client_secret": …}
//   GOVBUS_OIDC_AUDIENCE  the "aud" of its access tokens
//   GOVBUS_OIDC_TTL       their lifetime in seconds (default 300)
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const clients = JSON.parse(process.env.GOVBUS_OIDC_CLIENTS || '[]');
const audience = process.env.GOVBUS_OIDC_AUDIENCE || 'govbus';
// Resource indicators must be absolute URIs (RFC 8707); a request without one gets this one.
const resource = URL.canParse(audience) ? audience : `urn:${audience}`;
const ttl = Number.parseInt(process.env.GOVBUS_OIDC_TTL || '300', 10);

// A fresh signing key per start, as a provider rotating its keys would have.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' };

// Nothing needs keeping beyond the process: JWT access tokens are not stored at all.
class MemoryAdapter {
  static rows = new Map();
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload) { MemoryAdapter.rows.set(this.key(id), payload); }
  async find(id) { return MemoryAdapter.rows.get(this.key(id)); }
  async findByUid() { return undefined; }
  async findByUserCode() { return undefined; }
  async consume(id) { const row = await this.find(id); if (row) row.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { MemoryAdapter.rows.delete(this.key(id)); }
  async revokeByGrantId() {}
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: clients.map(({ client_id, client_secret }) => ({
      client_id,
      client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    adapter: MemoryAdapter,
    jwks: { keys: [signingKey] },
    // Its only key is an EC key; clients' defaults must not ask for RS256.
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator) => {
          if (indicator !== resource) {
            throw new errors.InvalidTarget();
          }
          return {
            audience,
            scope: '',
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    ttl: { ClientCredentials: ttl },
  });
  server.on('request', provider.callback());
  process.stdout.write(`listening ${port}\n`);
});

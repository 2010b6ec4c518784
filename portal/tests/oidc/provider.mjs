// A real OpenID Connect provider for the web UI tests: panva's
// oidc-provider (certified), with its development login form. Any login
// name signs in; the account's e-mail is `<login>@example.com` and its
// groups come from GROUPS (JSON: {"login": ["group", ...]}).
//
// env: PORT, REDIRECT_URI, CLIENT_ID, CLIENT_SECRET, GROUPS
// Prints "ready <issuer>" once listening.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const groups = JSON.parse(process.env.GROUPS || '{}');

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  // Put the claims into the ID token itself, not only behind /userinfo.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  // Grant every requested scope and claim without a consent screen.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: `${id}@example.com`,
        email_verified: true,
        name: id,
        groups: groups[id] || [],
      };
    },
  }),
});
provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));

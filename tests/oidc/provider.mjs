// A real OpenID provider (npm oidc-provider) on loopback, shaped like Pro Santé Connect:
// scope "openid scope_all", acr "eidas1", SubjectNameID and SubjectRefPro claims.
// Started by the test suite with its configuration in OIDC_TEST_CONFIG (JSON).
import Provider from "oidc-provider";

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: [config.redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [config.signing_jwk] },
  pkce: { required: () => true },
  scopes: ["openid", "scope_all"],
  claims: {
    openid: ["sub"],
    scope_all: ["given_name", "family_name", "SubjectNameID", "SubjectRefPro"],
  },
  acrValues: ["eidas1", "eidas2", "eidas3", "low"],
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [config.cookie_key] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, ...config.account_claims }),
  }),
});
provider.proxy = false;

// The user "logs in" at once (a CPS card would be read here), with the configured acr.
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith("/interaction/")) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.prompt.name === "login") {
      await provider.interactionFinished(ctx.req, ctx.res,
        { login: { accountId: config.account_id, acr: config.acr, amr: ["pop"] } },
        { mergeWithLastSubmission: false });
      return;
    }
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope("openid scope_all");
    grant.addOIDCClaims(["given_name", "family_name", "SubjectNameID", "SubjectRefPro"]);
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  await next();
});

provider.listen(config.port, "127.0.0.1", () => console.log("ready"));

// Passkey ceremonies for the portal. No inline script anywhere: the CSP forbids it.
"use strict";

const b64url = {
  decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

function creationOptions(json) {
  if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  return {
    ...json,
    challenge: b64url.decode(json.challenge),
    user: { ...json.user, id: b64url.decode(json.user.id) },
    excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: b64url.decode(c.id) })),
  };
}

function requestOptions(json) {
  if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  return {
    ...json,
    challenge: b64url.decode(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: b64url.decode(c.id) })),
  };
}

function credentialJSON(credential) {
  if (credential.toJSON) return credential.toJSON();
  const r = credential.response;
  const response = { clientDataJSON: b64url.encode(r.clientDataJSON) };
  if (r.attestationObject) response.attestationObject = b64url.encode(r.attestationObject);
  if (r.authenticatorData) response.authenticatorData = b64url.encode(r.authenticatorData);
  if (r.signature) response.signature = b64url.encode(r.signature);
  if (r.userHandle) response.userHandle = b64url.encode(r.userHandle);
  return { id: credential.id, rawId: b64url.encode(credential.rawId), type: credential.type, response,
           clientExtensionResults: credential.getClientExtensionResults() };
}

async function post(path, body) {
  const reply = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.detail || "Échec");
  return data;
}

function say(text) {
  document.getElementById("status").textContent = text;
}

async function enrol() {
  const token = location.hash.slice(1);
  history.replaceState(null, "", location.pathname); // the token leaves the address bar
  try {
    const options = await post("/auth/register/options", { invitation: token });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    const name = document.getElementById("passkey-name").value;
    const done = await post("/auth/register/verify", { credential: credentialJSON(credential), name });
    location.assign(done.redirect);
  } catch (error) {
    say("L'enregistrement de la clé n'a pas abouti. Demandez une nouvelle invitation si elle a expiré.");
  }
}

async function login() {
  try {
    const options = await post("/auth/login/options");
    const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
    const done = await post("/auth/login/verify", { credential: credentialJSON(credential) });
    location.assign(done.redirect);
  } catch (error) {
    say("Connexion refusée.");
  }
}

async function stepUp() {
  const options = await post("/auth/step-up/options");
  const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
  await post("/auth/step-up/verify", { credential: credentialJSON(credential) });
}

async function addPasskey() {
  try {
    let options;
    try {
      options = await post("/account/passkeys/options");
    } catch (error) {
      if (error.message !== "step_up_required") throw error;
      say("Confirmez d'abord avec une de vos clés d'accès.");
      await stepUp(); // adding a passkey needs a fresh confirmation
      options = await post("/account/passkeys/options");
    }
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    const name = document.getElementById("passkey-name").value;
    const done = await post("/account/passkeys/verify", { credential: credentialJSON(credential), name });
    location.assign(done.redirect);
  } catch (error) {
    say("La clé n'a pas été ajoutée.");
  }
}

async function revokePasskey(event) {
  try {
    const done = await withStepUp(`/account/passkeys/${event.target.dataset.passkey}/revoke`);
    location.assign(done.redirect);
  } catch (error) {
    say(error.message);
  }
}

async function withStepUp(path, body) {
  try {
    return await post(path, body);
  } catch (error) {
    if (error.message !== "step_up_required") throw error;
    say("Confirmez d'abord avec une de vos clés d'accès.");
    await stepUp();
    return post(path, body);
  }
}

async function invite() {
  const role = document.getElementById("invite-role").value;
  const rpps = document.getElementById("invite-rpps").value.trim();
  try {
    const { link } = await withStepUp("/account/invitations", role === "professional" ? { role, rpps } : { role });
    document.getElementById("invitation-link").textContent = link;
    say("Transmettez ce lien à votre collègue : il ne sert qu'une fois.");
  } catch (error) {
    say("L'invitation n'a pas été créée.");
  }
}

async function recoveryCodes() {
  try {
    const { codes } = await withStepUp("/account/recovery-codes");
    const list = document.getElementById("codes");
    list.replaceChildren(...codes.map((code) => Object.assign(document.createElement("li"), { textContent: code })));
    say("Notez ces codes maintenant : ils ne seront plus affichés.");
  } catch (error) {
    say("Les codes n'ont pas été générés.");
  }
}

async function recover() {
  try {
    const code = document.getElementById("recovery-code").value;
    const options = await post("/auth/recover/options", { code });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    const name = document.getElementById("passkey-name").value;
    const done = await post("/auth/recover/verify", { credential: credentialJSON(credential), name });
    location.assign(done.redirect);
  } catch (error) {
    say("Code refusé.");
  }
}

async function registerClient() {
  try {
    const public_jwk = JSON.parse(document.getElementById("client-jwk").value);
    const scopes = [...document.querySelectorAll("#client-scopes input:checked")].map((box) => box.value);
    const { client_id } = await withStepUp("/account/api-clients", { public_jwk, scopes });
    document.getElementById("client-created").textContent = `Identifiant du logiciel : ${client_id}`;
    say("Logiciel enregistré : saisissez cet identifiant dans ses réglages.");
  } catch (error) {
    say(`Le logiciel n'a pas été enregistré : ${error.message}`);
  }
}

async function revokeClient(event) {
  try {
    const done = await post(`/account/api-clients/${event.target.dataset.client}/revoke`);
    location.assign(done.redirect);
  } catch (error) {
    say(error.message);
  }
}

async function revokeSession(event) {
  const done = await post(`/account/sessions/${event.target.dataset.session}/revoke`).catch(() => ({ redirect: "/login" }));
  location.assign(done.redirect);
}

async function chooseEstablishment(event) {
  const done = await post(`/account/establishment/${event.target.dataset.establishment}`).catch(() => null);
  if (done) location.assign(done.redirect); else say("Choix refusé.");
}

async function revokeSessions() {
  const done = await post("/account/sessions/revoke").catch(() => ({ redirect: "/login" }));
  location.assign(done.redirect);
}

async function logout() {
  await post("/auth/logout").catch(() => {});
  location.assign("/login");
}

document.addEventListener("DOMContentLoaded", () => {
  const bind = (id, handler) => { const el = document.getElementById(id); if (el) el.addEventListener("click", handler); };
  bind("enrol", enrol);
  bind("login", login);
  bind("logout", logout);
  bind("add-passkey", addPasskey);
  bind("revoke-sessions", revokeSessions);
  bind("recovery-codes", recoveryCodes);
  bind("recover", recover);
  bind("invite", invite);
  bind("register-client", registerClient);
  for (const el of document.querySelectorAll(".revoke-client")) el.addEventListener("click", revokeClient);
  for (const el of document.querySelectorAll(".revoke-passkey")) el.addEventListener("click", revokePasskey);
  for (const el of document.querySelectorAll(".revoke-session")) el.addEventListener("click", revokeSession);
  for (const el of document.querySelectorAll(".choose-establishment")) el.addEventListener("click", chooseEstablishment);
});

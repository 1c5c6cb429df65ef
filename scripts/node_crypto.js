// The original worker's key encryption, in Node's own crypto, for compatibility vectors.
//
//   node scripts/node_crypto.js vectors > tests/vectors/node_aes_gcm.json
//   echo '[{"secret": "...", "ciphertext": "..."}]' | node scripts/node_crypto.js decrypt
//
// Format: hex(iv) + hex(tag) + hex(ciphertext); IV 16 bytes; AES key = sha256(secret as UTF-8).
"use strict";
const crypto = require("crypto");

function aesKey(secret) {
  return crypto.createHash("sha256").update(secret, "utf8").digest();
}

function encrypt(text, secret) {
  const iv = crypto.randomBytes(16);
  const cipher = crypto.createCipheriv("aes-256-gcm", aesKey(secret), iv);
  let encrypted = cipher.update(text, "utf8", "hex");
  encrypted += cipher.final("hex");
  return iv.toString("hex") + cipher.getAuthTag().toString("hex") + encrypted;
}

function decrypt(hex, secret) {
  const iv = Buffer.from(hex.slice(0, 32), "hex");
  const tag = Buffer.from(hex.slice(32, 64), "hex");
  const decipher = crypto.createDecipheriv("aes-256-gcm", aesKey(secret), iv);
  decipher.setAuthTag(tag);
  let text = decipher.update(hex.slice(64), "hex", "utf8");
  text += decipher.final("utf8");
  return text;
}

const cases = [
  // A plain passphrase, as many deployments use.
  ["correct horse battery staple", "AbCdEfGh12345678"],
  // The old README asked for "a 32-byte hex string": it is hashed as text, never hex-decoded.
  ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "ZZzz0000yyYY1111"],
  // Non-ASCII secrets are hashed as UTF-8.
  ["clé secrète ✓ 秘密", "k3yWithDigits999"],
  // Longer and non-ASCII plaintexts round-trip too.
  ["s", "a".repeat(64)],
  ["another secret", "ключ-0123456789"],
];

function readStdin() {
  return require("fs").readFileSync(0, "utf8");
}

const mode = process.argv[2];
if (mode === "vectors") {
  const vectors = cases.map(([secret, plaintext]) => ({ secret, plaintext, ciphertext: encrypt(plaintext, secret) }));
  process.stdout.write(JSON.stringify({ generator: "scripts/node_crypto.js", node: process.version, vectors }, null, 2) + "\n");
} else if (mode === "decrypt") {
  const items = JSON.parse(readStdin());
  const out = items.map(({ secret, ciphertext }) => {
    try {
      return { ok: true, plaintext: decrypt(ciphertext, secret) };
    } catch (e) {
      return { ok: false, error: String(e.message) };
    }
  });
  process.stdout.write(JSON.stringify(out) + "\n");
} else {
  process.stderr.write("usage: node scripts/node_crypto.js vectors|decrypt\n");
  process.exit(2);
}

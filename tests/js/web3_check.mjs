// Drives a Solana JSON-RPC endpoint with @solana/web3.js 1.x (and @solana/spl-token's own
// decoders), the way a wallet or an explorer does, and prints what each call returned as one
// JSON object on stdout. It asserts nothing: tests/integration/test_web3js.py compares the
// results with values it knows independently (what it sent, to whom, how much).
//
// usage: node web3_check.mjs <rpc-url> '<json: {payer, alice, bob, carol, mint, aliceAta,
//        bobAta, missing, sigs: {transfer, mint, mintTo, tokenTransfer, carol: [oldest..newest]}}>'
//
// Each result is {"ok": value} or {"error": {name, code, message}}: a call that throws is a
// result too (web3.js throws on shapes it cannot read, which is what this check is for).

import { Connection, PublicKey } from "@solana/web3.js";
import { TOKEN_PROGRAM_ID, getAccount, getAssociatedTokenAddressSync, getMint } from "@solana/spl-token";

const [url, rawArgs] = process.argv.slice(2);
if (!url || !rawArgs) {
  console.error("usage: node web3_check.mjs <rpc-url> <json-args>");
  process.exit(2);
}
const args = JSON.parse(rawArgs);
const key = (name) => new PublicKey(args[name]);
const connection = new Connection(url, { commitment: "confirmed", disableRetryOnRateLimit: true });
const results = {};

// JSON for what web3.js hands back: keys as base58, buffers as base64, bigints as strings.
function plain(value) {
  if (value === null || value === undefined) return value ?? null;
  if (typeof value === "bigint") return value.toString();
  if (value instanceof PublicKey) return value.toBase58();
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return { base64: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    if (typeof value.toBase58 === "function") return value.toBase58();
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

async function record(name, call) {
  try {
    results[name] = { ok: plain(await call()) };
  } catch (err) {
    results[name] = { error: { name: err?.name ?? "Error", code: err?.code ?? null, message: String(err?.message ?? err) } };
  }
}

// A raw request through web3.js's own transport: for params its typed API would not send.
async function raw(method, params) {
  const answer = await connection._rpcRequest(method, params);
  if (answer.error) {
    const err = new Error(answer.error.message);
    err.name = "JsonRpcError";
    err.code = answer.error.code;
    throw err;
  }
  return answer.result;
}

const parsedTx = { commitment: "confirmed", maxSupportedTransactionVersion: 0 };

await record("getVersion", () => connection.getVersion());
await record("getBalance.alice", () => connection.getBalance(key("alice")));
await record("getBalance.carol", () => connection.getBalance(key("carol")));

await record("getParsedTransaction.transfer", () => connection.getParsedTransaction(args.sigs.transfer, parsedTx));
await record("getParsedTransaction.mint", () => connection.getParsedTransaction(args.sigs.mint, parsedTx));
await record("getParsedTransaction.mintTo", () => connection.getParsedTransaction(args.sigs.mintTo, parsedTx));
await record("getParsedTransaction.tokenTransfer",
  () => connection.getParsedTransaction(args.sigs.tokenTransfer, parsedTx));
await record("getParsedTransactions", () =>
  connection.getParsedTransactions([args.sigs.transfer, args.sigs.tokenTransfer], parsedTx));
await record("getTransaction.tokenTransfer", async () => {
  const tx = await connection.getTransaction(args.sigs.tokenTransfer, parsedTx);
  return tx && { slot: tx.slot, fee: tx.meta.fee, err: tx.meta.err, version: tx.version,
    signatures: tx.transaction.signatures, preTokenBalances: tx.meta.preTokenBalances,
    postTokenBalances: tx.meta.postTokenBalances };
});

await record("getParsedAccountInfo.mint", () => connection.getParsedAccountInfo(key("mint")));
await record("getParsedAccountInfo.aliceAta", () => connection.getParsedAccountInfo(key("aliceAta")));
await record("getParsedAccountInfo.alice", () => connection.getParsedAccountInfo(key("alice")));
await record("getMultipleParsedAccounts", () =>
  connection.getMultipleParsedAccounts(["mint", "bobAta", "alice", "missing"].map(key)));
await record("getAccountInfo.mint", () => connection.getAccountInfo(key("mint")));
await record("splToken.getMint", () => getMint(connection, key("mint"), "confirmed"));
await record("splToken.getAccount.aliceAta", () => getAccount(connection, key("aliceAta"), "confirmed"));
await record("splToken.associatedAddress.alice", () => getAssociatedTokenAddressSync(key("mint"), key("alice")));

await record("getTokenAccountsByOwner.alice.mint", () =>
  connection.getTokenAccountsByOwner(key("alice"), { mint: key("mint") }));
await record("getTokenAccountsByOwner.alice.programId", () =>
  connection.getTokenAccountsByOwner(key("alice"), { programId: TOKEN_PROGRAM_ID }));
await record("getTokenAccountsByOwner.carol.programId", () =>
  connection.getTokenAccountsByOwner(key("carol"), { programId: TOKEN_PROGRAM_ID }));
await record("getParsedTokenAccountsByOwner.bob", () =>
  connection.getParsedTokenAccountsByOwner(key("bob"), { programId: TOKEN_PROGRAM_ID }));
await record("getTokenAccountBalance.bobAta", () => connection.getTokenAccountBalance(key("bobAta")));
await record("getTokenAccountBalance.alice", () => connection.getTokenAccountBalance(key("alice")));
await record("getTokenSupply", () => connection.getTokenSupply(key("mint")));
await record("getTokenLargestAccounts", () => connection.getTokenLargestAccounts(key("mint")));

const byMint = { memcmp: { offset: 0, bytes: args.mint } };
await record("getProgramAccounts.mintHolders", () =>
  connection.getProgramAccounts(TOKEN_PROGRAM_ID, { filters: [{ dataSize: 165 }, byMint] }));
await record("getProgramAccounts.bobHolding", () => connection.getProgramAccounts(TOKEN_PROGRAM_ID,
  { filters: [{ dataSize: 165 }, { memcmp: { offset: 32, bytes: args.bob } }] }));
await record("getProgramAccounts.mintsOfPayer", () => connection.getProgramAccounts(TOKEN_PROGRAM_ID,
  { filters: [{ dataSize: 82 }, { memcmp: { offset: 4, bytes: args.payer } }] }));
await record("getProgramAccounts.withContext", () => connection.getProgramAccounts(TOKEN_PROGRAM_ID,
  { filters: [{ dataSize: 165 }, byMint], withContext: true }));
await record("getParsedProgramAccounts.mintHolders", () =>
  connection.getParsedProgramAccounts(TOKEN_PROGRAM_ID, { filters: [{ dataSize: 165 }, byMint] }));

const carolSigs = args.sigs.carol; // oldest first
await record("getSignaturesForAddress.carol.all", () => connection.getSignaturesForAddress(key("carol")));
await record("getSignaturesForAddress.carol.page1", () => connection.getSignaturesForAddress(key("carol"), { limit: 2 }));
await record("getSignaturesForAddress.carol.page2", async () => {
  const first = await connection.getSignaturesForAddress(key("carol"), { limit: 2 });
  return connection.getSignaturesForAddress(key("carol"), { limit: 2, before: first[first.length - 1].signature });
});
await record("getSignaturesForAddress.carol.until", () =>
  connection.getSignaturesForAddress(key("carol"), { until: carolSigs[1] }));
await record("getSignaturesForAddress.carol.beforeUntil", () => connection.getSignaturesForAddress(key("carol"),
  { before: carolSigs[carolSigs.length - 1], until: carolSigs[0] }));

await record("bad.programIdNotToken", () =>
  raw("getTokenAccountsByOwner", [args.alice, { programId: args.payer }, { encoding: "base64" }]));
await record("bad.filterKind", () => raw("getTokenAccountsByOwner", [args.alice, { owner: args.payer }]));
await record("bad.base58TooLarge", () => raw("getAccountInfo", [args.aliceAta, { encoding: "base58" }]));
await record("bad.pubkey", () => raw("getBalance", ["not-a-key"]));
await record("bad.limit", () => raw("getSignaturesForAddress", [args.carol, { limit: 0 }]));
await record("bad.tooManyFilters", () =>
  raw("getProgramAccounts", [TOKEN_PROGRAM_ID.toBase58(), { filters: Array(5).fill({ dataSize: 165 }) }]));
await record("bad.transactionEncoding", () =>
  raw("getTransaction", [args.sigs.transfer, { encoding: "yaml", commitment: "confirmed" }]));
await record("bad.method", () => raw("getMoonPhase", []));

process.stdout.write(JSON.stringify(results) + "\n");

/*
 * The bandwidth pool program: accepts epoch reports signed by a quorum of the stored
 * validator set, chains them report to report, and pays providers by merkle claims.
 *
 * Layouts, instructions and error codes: programs/pool/README.md (the contract; the Python
 * side is validator/pool_program.py). This file owns their on-chain enforcement.
 *
 * Built for SBPFv0 with clang-14 -target bpfel and programs/sbpf_link.py. No libc: the few
 * helpers it needs are below. The stack frame limit is 512 bytes, so the parsed account
 * table lives on the heap; globals are const (a program has no writable data section).
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NULL ((void *)0)

/* -- syscalls ------------------------------------------------------------------------- */

typedef struct { const u8 *addr; u64 len; } SolBytes;
typedef struct { const u8 *addr; u64 len; } SolSignerSeed;
typedef struct { const SolSignerSeed *addr; u64 len; } SolSignerSeeds;
typedef struct { u8 *pubkey; u8 is_writable; u8 is_signer; } SolAccountMeta;
typedef struct {
    const u8 *program_id;
    const SolAccountMeta *accounts;
    u64 account_len;
    const u8 *data;
    u64 data_len;
} SolInstruction;
typedef struct {
    u8 *key;
    u64 *lamports;
    u64 data_len;
    u8 *data;
    u8 *owner;
    u64 rent_epoch;
    u8 is_signer;
    u8 is_writable;
    u8 executable;
} SolAccountInfo;

extern void sol_log_(const char *message, u64 len);
extern void sol_log_64_(u64 a, u64 b, u64 c, u64 d, u64 e);
extern void sol_log_data(const SolBytes *fields, u64 count);
extern u64 sol_sha256(const SolBytes *slices, u64 count, u8 *out);
extern u64 sol_create_program_address(const SolSignerSeed *seeds, u64 count,
                                      const u8 *program_id, u8 *out);
extern u64 sol_try_find_program_address(const SolSignerSeed *seeds, u64 count,
                                        const u8 *program_id, u8 *out, u8 *bump);
extern u64 sol_invoke_signed_c(const SolInstruction *ix, const SolAccountInfo *infos,
                               u64 info_count, const SolSignerSeeds *signers, u64 signer_count);
extern u64 sol_get_rent_sysvar(u8 *out);
extern u64 sol_get_clock_sysvar(u8 *out);

#define NOINLINE __attribute__((noinline))
#define LOG(text) sol_log_((text), sizeof(text) - 1)

/* -- constants ------------------------------------------------------------------------ */

#define POOL_SIZE 256
#define SET_HEADER 88
#define REPORT_SIZE 384
#define CLAIMS_SIZE 8272
#define TOKEN_ACCOUNT_SIZE 165
#define MINT_SIZE 82
#define HEADER_SIZE 188
#define RECORD_SIZE 88
#define MAX_VALIDATORS 256
#define MAX_PATH 32
#define CHUNK_BITS 65536
#define MAX_CHUNKS 16
#define MAX_RECORDS (CHUNK_BITS * MAX_CHUNKS)
#define MAX_ACCOUNTS 48
#define FRAUD_FLAGS 0x005A
#define STATUS_COLLECTING 1
#define STATUS_ACCEPTED 2
#define THIS_INSTRUCTION 0xFFFF

static const u8 TAG_POOL[8] = {'B', 'W', 'P', ':', 'P', 'O', 'O', 'L'};
static const u8 TAG_SET[8] = {'B', 'W', 'P', ':', 'V', 'S', 'E', 'T'};
static const u8 TAG_REPORT[8] = {'B', 'W', 'P', ':', 'R', 'E', 'P', 'T'};
static const u8 TAG_CLAIMS[8] = {'B', 'W', 'P', ':', 'C', 'L', 'M', 'S'};
static const u8 MAGIC[4] = {'B', 'W', 'P', 'R'};

static const u8 SYSTEM_PROGRAM[32] = {0};
static const u8 TOKEN_PROGRAM[32] = {
    0x06, 0xdd, 0xf6, 0xe1, 0xd7, 0x65, 0xa1, 0x93, 0xd9, 0xcb, 0xe1, 0x46, 0xce, 0xeb, 0x79, 0xac,
    0x1c, 0xb4, 0x85, 0xed, 0x5f, 0x5b, 0x37, 0x91, 0x3a, 0x8c, 0xf5, 0x85, 0x7e, 0xff, 0x00, 0xa9};
static const u8 ED25519_PROGRAM[32] = {
    0x03, 0x7d, 0x46, 0xd6, 0x7c, 0x93, 0xfb, 0xbe, 0x12, 0xf9, 0x42, 0x8f, 0x83, 0x8d, 0x40, 0xff,
    0x05, 0x70, 0x74, 0x49, 0x27, 0xf4, 0x8a, 0x64, 0xfc, 0xca, 0x70, 0x44, 0x80, 0x00, 0x00, 0x00};
static const u8 INSTRUCTIONS_SYSVAR[32] = {
    0x06, 0xa7, 0xd5, 0x17, 0x18, 0x7b, 0xd1, 0x66, 0x35, 0xda, 0xd4, 0x04, 0x55, 0xfd, 0xc2, 0xc0,
    0xc1, 0x24, 0xc6, 0x8f, 0x21, 0x56, 0x75, 0xa5, 0xdb, 0xba, 0xcb, 0x5f, 0x08, 0x00, 0x00, 0x00};

/* Error codes: Custom(code). The names are logged and listed in README.md. */
enum {
    E_INVALID_INSTRUCTION = 6000,
    E_NOT_ENOUGH_ACCOUNTS,
    E_WRONG_ACCOUNT_OWNER,
    E_WRONG_ACCOUNT_TYPE,
    E_WRONG_ADDRESS,
    E_MISSING_SIGNER,
    E_NOT_WRITABLE,
    E_ALREADY_INITIALIZED,
    E_INVALID_SET,
    E_SET_INCOMPLETE,
    E_NOT_INSTRUCTIONS_SYSVAR,
    E_MISSING_ED25519,
    E_ED25519_HAS_ACCOUNTS,
    E_ED25519_LAYOUT,
    E_NO_SIGNATURES,
    E_MESSAGE_NOT_HEADER_HASH,
    E_SIGNER_NOT_MEMBER,
    E_SIGNER_COUNTED_TWICE,
    E_WRONG_DIGEST,
    E_STALE_EPOCH,
    E_BROKEN_CHAIN,
    E_HEADER_MALFORMED,
    E_DIFFERENT_HEADER,
    E_NOT_ACCEPTED,
    E_ALREADY_CLAIMED,
    E_INDEX_OUT_OF_RANGE,
    E_WRONG_MERKLE_PATH,
    E_WRONG_DESTINATION,
    E_ARITHMETIC_OVERFLOW,
    E_PAYOUT_EXCEEDS_RESERVED,
    E_CLAIM_WINDOW_OPEN,
    E_CHUNKS_MISSING,
    E_UNAUTHORIZED,
    E_TOO_MANY_RECORDS,
    E_LAST
};

static const char *const ERROR_NAMES[E_LAST - E_INVALID_INSTRUCTION] = {
    "InvalidInstruction", "NotEnoughAccounts", "WrongAccountOwner", "WrongAccountType",
    "WrongAddress", "MissingSigner", "NotWritable", "AlreadyInitialized", "InvalidSet",
    "SetIncomplete", "NotInstructionsSysvar", "MissingEd25519", "Ed25519HasAccounts",
    "Ed25519Layout", "NoSignatures", "MessageNotHeaderHash", "SignerNotMember",
    "SignerCountedTwice", "WrongDigest", "StaleEpoch", "BrokenChain", "HeaderMalformed",
    "DifferentHeader", "NotAccepted", "AlreadyClaimed", "IndexOutOfRange", "WrongMerklePath",
    "WrongDestination", "ArithmeticOverflow", "PayoutExceedsReserved", "ClaimWindowOpen",
    "ChunksMissing", "Unauthorized", "TooManyRecords",
};

/* -- small helpers -------------------------------------------------------------------- */

/*
 * Word-at-a-time access. The SBF VM allows unaligned loads and stores (instruction data
 * has no alignment), and a word costs one instruction where bytes cost eight: this is
 * most of a post's compute budget.
 */
/* Not aligned(1): clang would split those into byte loads on this target. */
typedef u64 __attribute__((may_alias)) unaligned_u64;
typedef u32 __attribute__((may_alias)) unaligned_u32;
typedef u16 __attribute__((may_alias)) unaligned_u16;

static u64 get_u64(const u8 *p) { return *(const unaligned_u64 *)p; }
static u32 get_u32(const u8 *p) { return *(const unaligned_u32 *)p; }
static u16 get_u16(const u8 *p) { return *(const unaligned_u16 *)p; }
static void put_u64(u8 *p, u64 v) { *(unaligned_u64 *)p = v; }
static void put_u32(u8 *p, u32 v) { *(unaligned_u32 *)p = v; }
static void put_u16(u8 *p, u16 v) { *(unaligned_u16 *)p = v; }

/* clang may lower struct copies and zeroing to these, so they are defined (not static). */
void *memcpy(void *dst, const void *src, u64 n) {
    u8 *d = dst;
    const u8 *s = src;
    for (; n >= 8; n -= 8, d += 8, s += 8) *(unaligned_u64 *)d = *(const unaligned_u64 *)s;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int value, u64 n) {
    u8 *d = dst;
    while (n--) *d++ = (u8)value;
    return dst;
}

static int equal(const u8 *a, const u8 *b, u64 n) {
    u64 i = 0;
    for (; i + 8 <= n; i += 8)
        if (get_u64(a + i) != get_u64(b + i)) return 0;
    for (; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int is_zero(const u8 *a, u64 n) {
    u64 i = 0;
    for (; i + 8 <= n; i += 8)
        if (get_u64(a + i)) return 0;
    for (; i < n; i++)
        if (a[i]) return 0;
    return 1;
}

/* Lexicographic order of two 32-byte keys: <0, 0, >0 (big-endian words compare alike). */
static int compare32(const u8 *a, const u8 *b) {
    for (int i = 0; i < 32; i += 8) {
        u64 x = __builtin_bswap64(get_u64(a + i)), y = __builtin_bswap64(get_u64(b + i));
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

static NOINLINE u64 fail(u64 code) {
    if (code >= E_INVALID_INSTRUCTION && code < E_LAST) {
        const char *name = ERROR_NAMES[code - E_INVALID_INSTRUCTION];
        u64 len = 0;
        while (name[len]) len++;
        LOG("bwpool: refused");
        sol_log_(name, len);
    }
    return code;
}

#define CHECK(cond, code) do { if (!(cond)) return fail(code); } while (0)
#define TRY(expr) do { u64 _r = (expr); if (_r) return _r; } while (0)

/* 64 x 64 -> 128-bit product (hi, lo) without compiler runtime helpers. */
static void mul128(u64 a, u64 b, u64 *hi, u64 *lo) {
    u64 a_lo = a & 0xffffffffULL, a_hi = a >> 32, b_lo = b & 0xffffffffULL, b_hi = b >> 32;
    u64 p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
    u64 middle = (p0 >> 32) + (p1 & 0xffffffffULL) + (p2 & 0xffffffffULL);
    *lo = (p0 & 0xffffffffULL) | (middle << 32);
    *hi = p3 + (p1 >> 32) + (p2 >> 32) + (middle >> 32);
}

/* floor((hi:lo) / d) for a quotient known to fit in 64 bits (hi < d). */
static u64 div128(u64 hi, u64 lo, u64 d) {
    if (hi == 0) return lo / d;
    u64 q = 0;
    for (int i = 63; i >= 0; i--) {
        u64 carry = hi >> 63;
        hi = (hi << 1) | (lo >> 63);
        lo <<= 1;
        q <<= 1;
        if (carry || hi >= d) { hi -= d; q |= 1; }
    }
    return q;
}

/* -- input ---------------------------------------------------------------------------- */

typedef struct {
    u8 *key;
    u8 *owner;
    u64 *lamports;
    u64 *data_len; /* in the input region: the runtime updates it after a CPI */
    u8 *data;
    u64 rent_epoch;
    u8 is_signer;
    u8 is_writable;
    u8 executable;
} Account;

typedef struct {
    Account *accounts;
    u64 count;
    const u8 *data;
    u64 data_len;
    const u8 *program_id;
} Input;

#define HEAP_START ((u8 *)0x300000000ULL)

static NOINLINE void parse_input(u8 *input, Input *out) {
    u8 *p = input;
    Account *accounts = (Account *)HEAP_START;
    u64 count = *(u64 *)p;
    p += 8;
    u64 kept = count < MAX_ACCOUNTS ? count : MAX_ACCOUNTS;
    for (u64 i = 0; i < count; i++) {
        u8 dup = p[0];
        if (dup != 0xff) {
            if (i < kept) accounts[i] = accounts[dup];
            p += 8;
            continue;
        }
        Account a;
        a.is_signer = p[1];
        a.is_writable = p[2];
        a.executable = p[3];
        p += 8;
        a.key = p;
        p += 32;
        a.owner = p;
        p += 32;
        a.lamports = (u64 *)p;
        p += 8;
        a.data_len = (u64 *)p;
        u64 len = *(u64 *)p;
        p += 8;
        a.data = p;
        p += len + 10240;
        p = (u8 *)(((u64)p + 7) & ~7ULL);
        a.rent_epoch = *(u64 *)p;
        p += 8;
        if (i < kept) accounts[i] = a;
    }
    out->accounts = accounts;
    out->count = kept;
    out->data_len = *(u64 *)p;
    p += 8;
    out->data = p;
    p += out->data_len;
    out->program_id = p;
}

/* The runtime's view of an account for a CPI (BPF cannot return structs by value). */
static void info_of(const Account *a, SolAccountInfo *info) {
    info->key = a->key;
    info->lamports = a->lamports;
    info->data_len = *a->data_len;
    info->data = a->data;
    info->owner = a->owner;
    info->rent_epoch = a->rent_epoch;
    info->is_signer = a->is_signer;
    info->is_writable = a->is_writable;
    info->executable = a->executable;
}

/* An account of ours of the given type: owner, tag and exact size. */
static u64 expect_ours(const Account *a, const u8 *program_id, const u8 *tag, u64 size) {
    CHECK(equal(a->owner, program_id, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*a->data_len == size && equal(a->data, tag, 8), E_WRONG_ACCOUNT_TYPE);
    return 0;
}

static u64 expect_writable(const Account *a) {
    CHECK(a->is_writable, E_NOT_WRITABLE);
    return 0;
}

/* Not yet created: still the System program's, empty. */
static int unused(const Account *a) {
    return equal(a->owner, SYSTEM_PROGRAM, 32) && *a->data_len == 0;
}

/* -- PDAs and CPIs -------------------------------------------------------------------- */

/*
 * `expected` must be the PDA of `seeds` with the *canonical* bump, and that bump must be
 * the last seed: with any other bump the same seeds would name a second account (a second
 * claim map for one chunk could pay a record twice).
 */
static NOINLINE u64 derive(const SolSignerSeed *seeds, u64 count, const u8 *program_id,
                           const u8 *expected) {
    u8 address[32], bump;
    CHECK(sol_try_find_program_address(seeds, count - 1, program_id, address, &bump) == 0,
          E_WRONG_ADDRESS);
    CHECK(seeds[count - 1].len == 1 && seeds[count - 1].addr[0] == bump, E_WRONG_ADDRESS);
    CHECK(equal(address, expected, 32), E_WRONG_ADDRESS);
    return 0;
}

/* Rent-exempt minimum for `size` bytes, from the Rent sysvar (threshold is an f64). */
static NOINLINE u64 rent_exempt(u64 size) {
    u8 rent[24];
    sol_get_rent_sysvar(rent);
    u64 per_byte_year = get_u64(rent);
    u64 bits = get_u64(rent + 8);
    u64 base = (128 + size) * per_byte_year;
    i64 exponent = (i64)((bits >> 52) & 0x7ff) - 1075;
    u64 mantissa = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    u64 hi, lo;
    mul128(base, mantissa, &hi, &lo);
    if (exponent >= 0) return lo << exponent; /* thresholds are small: no overflow */
    u64 shift = (u64)(-exponent); /* >= 1 here */
    if (shift >= 64) return (hi >> (shift - 64)) + 1;
    u64 rest = lo & ((1ULL << shift) - 1);
    return ((hi << (64 - shift)) | (lo >> shift)) + (rest ? 1 : 0); /* rounded up */
}

/* A System program instruction on `a` (signer) and optionally `b`; `signer` may be NULL. */
static NOINLINE u64 system_call(const SolBytes *data, const Account *a, const Account *b,
                                u8 b_signs, const SolSignerSeeds *signer) {
    SolAccountMeta metas[2];
    SolAccountInfo infos[2];
    metas[0].pubkey = a->key;
    metas[0].is_writable = 1;
    metas[0].is_signer = 1;
    info_of(a, &infos[0]);
    u64 n = 1;
    if (b) {
        metas[1].pubkey = b->key;
        metas[1].is_writable = 1;
        metas[1].is_signer = b_signs;
        info_of(b, &infos[1]);
        n = 2;
    }
    SolInstruction ix = {SYSTEM_PROGRAM, metas, n, data->addr, data->len};
    return sol_invoke_signed_c(&ix, infos, n, signer, signer ? 1 : 0);
}

/*
 * Create the PDA `target` with `size` bytes owned by `owner`, the payer paying rent. An
 * address someone pre-funded (which would make CreateAccount fail) is topped up, allocated
 * and assigned instead, so nobody can block an account by sending it lamports first.
 */
static NOINLINE u64 create_pda(const Account *payer, const Account *target, u64 size,
                               const u8 *owner, const SolSignerSeeds *signer) {
    CHECK(unused(target), E_ALREADY_INITIALIZED);
    CHECK(payer->is_signer, E_MISSING_SIGNER);
    CHECK(payer->is_writable && target->is_writable, E_NOT_WRITABLE);
    u64 need = rent_exempt(size);
    u8 data[52];
    SolBytes bytes = {data, 52};
    if (*target->lamports == 0) {
        put_u32(data, 0); /* CreateAccount */
        put_u64(data + 4, need);
        put_u64(data + 12, size);
        memcpy(data + 20, owner, 32);
        return system_call(&bytes, payer, target, 1, signer);
    }
    if (*target->lamports < need) {
        put_u32(data, 2); /* Transfer */
        put_u64(data + 4, need - *target->lamports);
        bytes.len = 12;
        TRY(system_call(&bytes, payer, target, 0, NULL));
    }
    put_u32(data, 8); /* Allocate */
    put_u64(data + 4, size);
    bytes.len = 12;
    TRY(system_call(&bytes, target, NULL, 0, signer));
    put_u32(data, 1); /* Assign */
    memcpy(data + 4, owner, 32);
    bytes.len = 36;
    return system_call(&bytes, target, NULL, 0, signer);
}

/* A System program instruction on up to three accounts: flags bit 0 signer, bit 1 writable. */
static NOINLINE u64 system_invoke(const SolBytes *data, const Account *const *accounts,
                                  const u8 *flags, u64 n, const SolSignerSeeds *signer) {
    SolAccountMeta metas[3];
    SolAccountInfo infos[3];
    for (u64 i = 0; i < n; i++) {
        metas[i].pubkey = accounts[i]->key;
        metas[i].is_signer = flags[i] & 1;
        metas[i].is_writable = (flags[i] >> 1) & 1;
        info_of(accounts[i], &infos[i]);
    }
    SolInstruction ix = {SYSTEM_PROGRAM, metas, n, data->addr, data->len};
    return sol_invoke_signed_c(&ix, infos, n, signer, signer ? 1 : 0);
}

/*
 * Per-report accounts live at `create_account_with_seed` addresses: sha256(base || seed ||
 * program id), base = the pool authority PDA, seed = 32 ASCII bytes. Unlike a PDA there is
 * no bump, so each (epoch, header) and each claim chunk has exactly one address, checked
 * with one hash. The seed is a tag letter and the URL-safe unpadded base64 of 23 bytes.
 */
#define SEED_LEN 32
static void seed_of(u8 tag, const u8 *bytes23, u8 *seed) {
    static const char alphabet[64] = {
        'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P',
        'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'a', 'b', 'c', 'd', 'e', 'f',
        'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v',
        'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '-', '_'};
    seed[0] = tag;
    u64 out = 1;
    for (u64 i = 0; i < 21; i += 3) {
        u32 v = (u32)bytes23[i] << 16 | (u32)bytes23[i + 1] << 8 | bytes23[i + 2];
        seed[out++] = (u8)alphabet[v >> 18];
        seed[out++] = (u8)alphabet[(v >> 12) & 63];
        seed[out++] = (u8)alphabet[(v >> 6) & 63];
        seed[out++] = (u8)alphabet[v & 63];
    }
    u32 v = (u32)bytes23[21] << 16 | (u32)bytes23[22] << 8;
    seed[out++] = (u8)alphabet[v >> 18];
    seed[out++] = (u8)alphabet[(v >> 12) & 63];
    seed[out++] = (u8)alphabet[(v >> 6) & 63];
}

static NOINLINE u64 expect_seeded(const u8 *base, const u8 *seed, const u8 *program_id,
                                  const u8 *expected) {
    u8 address[32];
    SolBytes parts[3] = {{base, 32}, {seed, SEED_LEN}, {program_id, 32}};
    sol_sha256(parts, 3, address);
    CHECK(equal(address, expected, 32), E_WRONG_ADDRESS);
    return 0;
}

/*
 * Create `target` at its seeded address (expect_seeded first) with `size` bytes owned by
 * the program, the payer paying rent, the pool authority signing as base. A pre-funded
 * address is topped up, allocated and assigned instead, so lamports sent there first
 * block nothing.
 */
typedef struct {
    const Account *base; /* the pool authority PDA */
    const u8 *seed;      /* SEED_LEN bytes */
    const u8 *program_id;
    const SolSignerSeeds *base_signer;
} Seeded;

static NOINLINE u64 create_seeded(const Account *payer, const Account *target, u64 size,
                                  const Seeded *at) {
    const Account *base = at->base;
    const u8 *seed = at->seed, *program_id = at->program_id;
    const SolSignerSeeds *base_signer = at->base_signer;
    CHECK(unused(target), E_ALREADY_INITIALIZED);
    CHECK(payer->is_signer, E_MISSING_SIGNER);
    CHECK(payer->is_writable && target->is_writable, E_NOT_WRITABLE);
    u64 need = rent_exempt(size);
    u8 data[124];
    SolBytes bytes = {data, 0};
    const u8 signer_writable = 3, writable = 2, signer = 1;
    if (*target->lamports == 0) {
        put_u32(data, 3); /* CreateAccountWithSeed { base, seed, lamports, space, owner } */
        memcpy(data + 4, base->key, 32);
        put_u64(data + 36, SEED_LEN);
        memcpy(data + 44, seed, SEED_LEN);
        put_u64(data + 76, need);
        put_u64(data + 84, size);
        memcpy(data + 92, program_id, 32);
        bytes.len = 124;
        const Account *accounts[3] = {payer, target, base};
        const u8 flags[3] = {signer_writable, writable, signer};
        return system_invoke(&bytes, accounts, flags, 3, base_signer);
    }
    if (*target->lamports < need) {
        put_u32(data, 2); /* Transfer { lamports } */
        put_u64(data + 4, need - *target->lamports);
        bytes.len = 12;
        const Account *accounts[2] = {payer, target};
        const u8 flags[2] = {signer_writable, writable};
        TRY(system_invoke(&bytes, accounts, flags, 2, NULL));
    }
    const Account *accounts[2] = {target, base};
    const u8 flags[2] = {writable, signer};
    put_u32(data, 9); /* AllocateWithSeed { base, seed, space, owner } */
    memcpy(data + 4, base->key, 32);
    put_u64(data + 36, SEED_LEN);
    memcpy(data + 44, seed, SEED_LEN);
    put_u64(data + 76, size);
    memcpy(data + 84, program_id, 32);
    bytes.len = 116;
    TRY(system_invoke(&bytes, accounts, flags, 2, base_signer));
    put_u32(data, 10); /* AssignWithSeed { base, seed, owner } */
    memcpy(data + 76, program_id, 32);
    bytes.len = 108;
    return system_invoke(&bytes, accounts, flags, 2, base_signer);
}

/* Close one of our accounts: its lamports go to `to`, its tag is wiped. */
static u64 close_into(const Account *account, const Account *to) {
    CHECK(account->is_writable && to->is_writable, E_NOT_WRITABLE);
    u64 sum = *to->lamports + *account->lamports;
    CHECK(sum >= *to->lamports, E_ARITHMETIC_OVERFLOW);
    *to->lamports = sum;
    *account->lamports = 0;
    memset(account->data, 0, 8);
    return 0;
}

/* -- account field offsets (README.md) ------------------------------------------------- */

#define POOL_AUTHORITY 8
#define POOL_MINT 40
#define POOL_VAULT 72
#define POOL_SET 104
#define POOL_LAST_HASH 136
#define POOL_BUDGET 168
#define POOL_WINDOW 176
#define POOL_LAST_EPOCH 184
#define POOL_ACCEPTED 192
#define POOL_RESERVED 200
#define POOL_PAID 208
#define POOL_SET_INDEX 216
#define POOL_AUTHORITY_BUMP 220
#define POOL_VAULT_BUMP 221
#define POOL_VERSION 222
#define POOL_AUTHORITY_PDA 224

#define SET_POOL 8
#define SET_DIGEST 40
#define SET_INDEX 72
#define SET_N 76
#define SET_F 78
#define SET_THRESHOLD 80
#define SET_WRITTEN 82
#define SET_BUMP 84
#define SET_KEYS 88

#define REPORT_POOL 8
#define REPORT_EPOCH 40
#define REPORT_HASH 48
#define REPORT_HEADER 80
#define REPORT_STATUS 268
#define REPORT_SIGNERS 270
#define REPORT_BITMAP 272
#define REPORT_SET_INDEX 304
#define REPORT_CHUNKS 308
#define REPORT_RESERVED 312
#define REPORT_CLAIMED 320
#define REPORT_CLAIMED_COUNT 328
#define REPORT_SLOT 336
#define REPORT_POSTER 344
#define REPORT_SEQ 376

#define CLAIMS_REPORT 8
#define CLAIMS_CHUNK 40
#define CLAIMS_PAYER 48
#define CLAIMS_BITS 80

/* Header fields (DESIGN §9). */
#define H_DIGEST 8
#define H_EPOCH 40
#define H_ROOT 48
#define H_COUNT 80
#define H_TOTAL 84
#define H_PREV 124

/* Record fields. */
#define R_PAYOUT 32
#define R_WEIGHT 78
#define R_FLAGS 86

static u64 expect_pool(const Account *pool, const u8 *program_id) {
    return expect_ours(pool, program_id, TAG_POOL, POOL_SIZE);
}

/* -- initialize and extend_set -------------------------------------------------------- */

/* Append `count` keys, strictly ascending after those already written. */
static NOINLINE u64 append_keys(u8 *set, const u8 *keys, u64 count) {
    u64 n = get_u16(set + SET_N), written = get_u16(set + SET_WRITTEN);
    CHECK(count <= n - written, E_INVALID_SET);
    for (u64 i = 0; i < count; i++) {
        const u8 *key = keys + 32 * i;
        u8 *slot = set + SET_KEYS + 32 * (written + i);
        if (written + i > 0) CHECK(compare32(slot - 32, key) < 0, E_INVALID_SET);
        memcpy(slot, key, 32);
    }
    put_u16(set + SET_WRITTEN, (u16)(written + count));
    return 0;
}

/* The vault: a token account of the mint at its PDA, owned by the pool authority. */
static NOINLINE u64 create_vault(const Input *in, const SolSignerSeeds *vault_signer) {
    const Account *authority = &in->accounts[0], *vault = &in->accounts[3];
    const Account *mint = &in->accounts[4], *pool_authority = &in->accounts[5];
    TRY(create_pda(authority, vault, TOKEN_ACCOUNT_SIZE, TOKEN_PROGRAM, vault_signer));
    u8 init_data[33];
    init_data[0] = 18; /* InitializeAccount3 { owner } */
    memcpy(init_data + 1, pool_authority->key, 32);
    SolAccountMeta metas[2] = {{vault->key, 1, 0}, {mint->key, 0, 0}};
    SolAccountInfo infos[2];
    info_of(vault, &infos[0]);
    info_of(mint, &infos[1]);
    SolInstruction ix = {TOKEN_PROGRAM, metas, 2, init_data, 33};
    return sol_invoke_signed_c(&ix, infos, 2, NULL, 0);
}

static NOINLINE u64 initialize(const Input *in) {
    CHECK(in->count >= 8, E_NOT_ENOUGH_ACCOUNTS);
    const Account *authority = &in->accounts[0], *pool = &in->accounts[1];
    const Account *set = &in->accounts[2], *vault = &in->accounts[3];
    const Account *mint = &in->accounts[4], *pool_authority = &in->accounts[5];
    CHECK(in->data_len >= 75, E_INVALID_INSTRUCTION);
    const u8 *d = in->data;
    u8 authority_bump = d[1], set_bump = d[2], vault_bump = d[3];
    u64 budget = get_u64(d + 4), window = get_u64(d + 12);
    const u8 *start_hash = d + 20, *digest = d + 52;
    u64 n = get_u16(d + 84), f = get_u16(d + 86), threshold = get_u16(d + 88), count = d[90];
    CHECK(in->data_len == 91 + 32 * count, E_INVALID_INSTRUCTION);

    CHECK(authority->is_signer, E_MISSING_SIGNER);
    CHECK(equal(pool->owner, in->program_id, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*pool->data_len == POOL_SIZE, E_WRONG_ACCOUNT_TYPE);
    CHECK(is_zero(pool->data, POOL_SIZE), E_ALREADY_INITIALIZED);
    TRY(expect_writable(pool));
    CHECK(equal(mint->owner, TOKEN_PROGRAM, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*mint->data_len == MINT_SIZE && mint->data[45] == 1, E_WRONG_ACCOUNT_TYPE);
    CHECK(equal(in->accounts[6].key, TOKEN_PROGRAM, 32), E_WRONG_ADDRESS);
    CHECK(equal(in->accounts[7].key, SYSTEM_PROGRAM, 32), E_WRONG_ADDRESS);
    CHECK(n >= 1 && n <= MAX_VALIDATORS && f == (n - 1) / 3 && threshold == (n + f) / 2 + 1,
          E_INVALID_SET);
    CHECK(count <= n && window >= 1, E_INVALID_SET);

    u8 index[4] = {0, 0, 0, 0};
    SolSignerSeed set_seeds[4] = {{(const u8 *)"set", 3}, {pool->key, 32}, {index, 4}, {&set_bump, 1}};
    TRY(derive(set_seeds, 4, in->program_id, set->key));
    SolSignerSeed authority_seeds[3] = {{(const u8 *)"authority", 9}, {pool->key, 32}, {&authority_bump, 1}};
    TRY(derive(authority_seeds, 3, in->program_id, pool_authority->key));
    SolSignerSeed vault_seeds[3] = {{(const u8 *)"vault", 5}, {pool->key, 32}, {&vault_bump, 1}};
    TRY(derive(vault_seeds, 3, in->program_id, vault->key));

    SolSignerSeeds set_signer = {set_seeds, 4};
    TRY(create_pda(authority, set, SET_HEADER + 32 * n, in->program_id, &set_signer));
    u8 *s = set->data;
    memcpy(s, TAG_SET, 8);
    memcpy(s + SET_POOL, pool->key, 32);
    memcpy(s + SET_DIGEST, digest, 32);
    put_u32(s + SET_INDEX, 0);
    put_u16(s + SET_N, (u16)n);
    put_u16(s + SET_F, (u16)f);
    put_u16(s + SET_THRESHOLD, (u16)threshold);
    s[SET_BUMP] = set_bump;
    TRY(append_keys(s, d + 91, count));

    SolSignerSeeds vault_signer = {vault_seeds, 3};
    TRY(create_vault(in, &vault_signer));

    u8 *p = pool->data;
    memcpy(p, TAG_POOL, 8);
    memcpy(p + POOL_AUTHORITY, authority->key, 32);
    memcpy(p + POOL_MINT, mint->key, 32);
    memcpy(p + POOL_VAULT, vault->key, 32);
    memcpy(p + POOL_SET, set->key, 32);
    memcpy(p + POOL_LAST_HASH, start_hash, 32);
    put_u64(p + POOL_BUDGET, budget);
    put_u64(p + POOL_WINDOW, window);
    p[POOL_AUTHORITY_BUMP] = authority_bump;
    p[POOL_VAULT_BUMP] = vault_bump;
    p[POOL_VERSION] = 1;
    memcpy(p + POOL_AUTHORITY_PDA, pool_authority->key, 32);
    LOG("bwpool: pool initialized");
    return 0;
}

static NOINLINE u64 extend_set(const Input *in) {
    CHECK(in->count >= 3, E_NOT_ENOUGH_ACCOUNTS);
    const Account *authority = &in->accounts[0], *pool = &in->accounts[1], *set = &in->accounts[2];
    CHECK(in->data_len >= 2 && in->data_len == 2 + 32 * (u64)in->data[1], E_INVALID_INSTRUCTION);
    TRY(expect_pool(pool, in->program_id));
    CHECK(authority->is_signer, E_MISSING_SIGNER);
    CHECK(equal(authority->key, pool->data + POOL_AUTHORITY, 32), E_UNAUTHORIZED);
    CHECK(equal(set->key, pool->data + POOL_SET, 32), E_WRONG_ADDRESS);
    CHECK(equal(set->owner, in->program_id, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*set->data_len >= SET_HEADER && equal(set->data, TAG_SET, 8), E_WRONG_ACCOUNT_TYPE);
    TRY(expect_writable(set));
    return append_keys(set->data, in->data + 2, in->data[1]);
}

/* -- post_report ---------------------------------------------------------------------- */

/*
 * The Ed25519 instruction just before this one, read through the instructions sysvar. Its
 * data must be exactly the layout README.md gives for k signatures over `message`: every
 * offset is recomputed and compared, so nothing is read from another instruction.
 * On success `keys` points at the first of k pubkeys (each 96 bytes apart).
 */
static NOINLINE u64 read_ed25519(const Account *sysvar, const u8 *message, const u8 **keys, u64 *k) {
    CHECK(equal(sysvar->key, INSTRUCTIONS_SYSVAR, 32), E_NOT_INSTRUCTIONS_SYSVAR);
    const u8 *s = sysvar->data;
    u64 len = *sysvar->data_len;
    CHECK(len >= 4, E_MISSING_ED25519);
    u64 total = get_u16(s), current = get_u16(s + len - 2);
    CHECK(current >= 1 && current < total && 2 + 2 * total <= len, E_MISSING_ED25519);
    u64 at = get_u16(s + 2 + 2 * (current - 1));
    CHECK(at + 2 <= len, E_MISSING_ED25519);
    u64 account_count = get_u16(s + at);
    u64 program_at = at + 2 + 33 * account_count;
    CHECK(program_at + 34 <= len, E_MISSING_ED25519);
    CHECK(equal(s + program_at, ED25519_PROGRAM, 32), E_MISSING_ED25519);
    CHECK(account_count == 0, E_ED25519_HAS_ACCOUNTS);
    u64 data_len = get_u16(s + program_at + 32);
    const u8 *d = s + program_at + 34;
    CHECK(program_at + 34 + data_len <= len && data_len >= 2, E_ED25519_LAYOUT);
    u64 count = d[0];
    CHECK(count >= 1, E_NO_SIGNATURES);
    CHECK(d[1] == 0 && data_len == 2 + 110 * count + 32, E_ED25519_LAYOUT);
    u64 message_at = 2 + 110 * count;
    for (u64 i = 0; i < count; i++) {
        const u8 *o = d + 2 + 14 * i;
        u64 key_at = 2 + 14 * count + 96 * i;
        CHECK(get_u16(o) == key_at + 32 && get_u16(o + 2) == THIS_INSTRUCTION &&
              get_u16(o + 4) == key_at && get_u16(o + 6) == THIS_INSTRUCTION &&
              get_u16(o + 8) == message_at && get_u16(o + 10) == 32 &&
              get_u16(o + 12) == THIS_INSTRUCTION, E_ED25519_LAYOUT);
    }
    CHECK(equal(d + message_at, message, 32), E_MESSAGE_NOT_HEADER_HASH);
    *keys = d + 2 + 14 * count;
    *k = count;
    return 0;
}

/* Index of `key` in the set's ascending keys, or NOT_MEMBER (unsigned: v2 has no signed div). */
#define NOT_MEMBER (~0ULL)
static u64 member_index(const u8 *set, const u8 *key) {
    u64 lo = 0, hi = get_u16(set + SET_N); /* [lo, hi) */
    while (lo < hi) {
        u64 mid = (lo + hi) >> 1;
        int c = compare32(set + SET_KEYS + 32 * mid, key);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NOT_MEMBER;
}

static NOINLINE u64 post_report(const Input *in) {
    CHECK(in->count >= 8, E_NOT_ENOUGH_ACCOUNTS);
    const Account *payer = &in->accounts[0], *pool = &in->accounts[1], *set = &in->accounts[2];
    const Account *report = &in->accounts[3], *vault = &in->accounts[4];
    const Account *sysvar = &in->accounts[5], *pool_authority = &in->accounts[7];
    CHECK(in->data_len == 1 + HEADER_SIZE, E_INVALID_INSTRUCTION);
    const u8 *header = in->data + 1;

    TRY(expect_pool(pool, in->program_id));
    TRY(expect_writable(pool));
    u8 *p = pool->data;
    CHECK(equal(set->key, p + POOL_SET, 32), E_WRONG_ADDRESS);
    CHECK(equal(set->owner, in->program_id, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*set->data_len >= SET_HEADER && equal(set->data, TAG_SET, 8), E_WRONG_ACCOUNT_TYPE);
    const u8 *s = set->data;
    u64 n = get_u16(s + SET_N), threshold = get_u16(s + SET_THRESHOLD);
    CHECK(*set->data_len == SET_HEADER + 32 * n, E_WRONG_ACCOUNT_TYPE);
    CHECK(get_u16(s + SET_WRITTEN) == n, E_SET_INCOMPLETE);

    CHECK(equal(header, MAGIC, 4) && header[4] == 1 && is_zero(header + 5, 3), E_HEADER_MALFORMED);
    CHECK(equal(header + H_DIGEST, s + SET_DIGEST, 32), E_WRONG_DIGEST);
    CHECK(get_u32(header + H_COUNT) <= MAX_RECORDS, E_TOO_MANY_RECORDS);
    u64 epoch = get_u64(header + H_EPOCH);
    u8 hash[32];
    SolBytes whole = {header, HEADER_SIZE};
    sol_sha256(&whole, 1, hash);

    int exists = !unused(report);
    if (exists) {
        TRY(expect_ours(report, in->program_id, TAG_REPORT, REPORT_SIZE));
        const u8 *r = report->data;
        CHECK(equal(r + REPORT_POOL, pool->key, 32) && get_u64(r + REPORT_EPOCH) == epoch &&
              equal(r + REPORT_HASH, hash, 32), E_WRONG_ADDRESS);
        if (r[REPORT_STATUS] == STATUS_ACCEPTED) {
            LOG("bwpool: report already accepted; nothing to do");
            return 0;
        }
        CHECK(get_u32(r + REPORT_SET_INDEX) == get_u32(p + POOL_SET_INDEX), E_WRONG_ADDRESS);
    }
    if (get_u64(p + POOL_ACCEPTED) > 0) {
        u64 last = get_u64(p + POOL_LAST_EPOCH);
        if (epoch == last) {
            SolBytes both[2] = {{p + POOL_LAST_HASH, 32}, {hash, 32}};
            LOG("bwpool: another header is accepted for this epoch (accepted, offered)");
            sol_log_data(both, 2);
            return fail(E_DIFFERENT_HEADER);
        }
        CHECK(epoch > last, E_STALE_EPOCH);
    }
    CHECK(equal(header + H_PREV, p + POOL_LAST_HASH, 32), E_BROKEN_CHAIN);

    const u8 *keys;
    u64 k;
    TRY(read_ed25519(sysvar, hash, &keys, &k));
    u8 seen[MAX_VALIDATORS / 8];
    memset(seen, 0, sizeof seen);
    for (u64 i = 0; i < k; i++) {
        u64 index = member_index(s, keys + 96 * i);
        CHECK(index != NOT_MEMBER, E_SIGNER_NOT_MEMBER);
        u8 bit = (u8)(1 << (index & 7));
        CHECK(!(seen[index >> 3] & bit), E_SIGNER_COUNTED_TWICE);
        seen[index >> 3] |= bit;
    }

    /* Every check passed: from here on state changes. */
    if (!exists) {
        u8 key[23], seed[SEED_LEN];
        put_u64(key, epoch);
        memcpy(key + 8, hash, 15);
        seed_of('R', key, seed);
        CHECK(equal(pool_authority->key, p + POOL_AUTHORITY_PDA, 32), E_WRONG_ADDRESS);
        TRY(expect_seeded(pool_authority->key, seed, in->program_id, report->key));
        u8 authority_bump = p[POOL_AUTHORITY_BUMP];
        SolSignerSeed authority_seeds[3] = {{(const u8 *)"authority", 9}, {pool->key, 32},
                                            {&authority_bump, 1}};
        SolSignerSeeds signer = {authority_seeds, 3};
        Seeded at = {pool_authority, seed, in->program_id, &signer};
        TRY(create_seeded(payer, report, REPORT_SIZE, &at));
        u8 *r = report->data;
        memcpy(r, TAG_REPORT, 8);
        memcpy(r + REPORT_POOL, pool->key, 32);
        put_u64(r + REPORT_EPOCH, epoch);
        memcpy(r + REPORT_HASH, hash, 32);
        memcpy(r + REPORT_HEADER, header, HEADER_SIZE);
        r[REPORT_STATUS] = STATUS_COLLECTING;
        put_u32(r + REPORT_SET_INDEX, get_u32(p + POOL_SET_INDEX));
        memcpy(r + REPORT_POSTER, payer->key, 32);
    }
    TRY(expect_writable(report));
    u8 *r = report->data;
    u64 signers = get_u16(r + REPORT_SIGNERS), added = 0;
    for (u64 byte = 0; byte < sizeof seen; byte++) {
        u8 fresh = seen[byte] & (u8)~r[REPORT_BITMAP + byte];
        r[REPORT_BITMAP + byte] |= fresh;
        for (; fresh; fresh &= (u8)(fresh - 1)) added++;
    }
    signers += added;
    put_u16(r + REPORT_SIGNERS, (u16)signers);
    if (signers < threshold) {
        sol_log_64_(epoch, signers, threshold, added, 0);
        return 0;
    }

    CHECK(equal(vault->key, p + POOL_VAULT, 32), E_WRONG_ADDRESS);
    CHECK(equal(vault->owner, TOKEN_PROGRAM, 32), E_WRONG_ACCOUNT_OWNER);
    CHECK(*vault->data_len == TOKEN_ACCOUNT_SIZE, E_WRONG_ACCOUNT_TYPE);
    u64 balance = get_u64(vault->data + 64), outstanding = get_u64(p + POOL_RESERVED);
    u64 unreserved = balance > outstanding ? balance - outstanding : 0;
    u64 budget = get_u64(p + POOL_BUDGET);
    u64 reserved = budget < unreserved ? budget : unreserved;
    u8 clock[40];
    sol_get_clock_sysvar(clock);
    u64 accepted = get_u64(p + POOL_ACCEPTED) + 1;
    r[REPORT_STATUS] = STATUS_ACCEPTED;
    put_u64(r + REPORT_RESERVED, reserved);
    put_u64(r + REPORT_SLOT, get_u64(clock));
    put_u64(r + REPORT_SEQ, accepted);
    put_u64(p + POOL_RESERVED, outstanding + reserved);
    put_u64(p + POOL_LAST_EPOCH, epoch);
    put_u64(p + POOL_ACCEPTED, accepted);
    memcpy(p + POOL_LAST_HASH, hash, 32);
    LOG("bwpool: report accepted (epoch, signers, threshold, reserved)");
    sol_log_64_(epoch, signers, threshold, reserved, 0);
    return 0;
}

/* -- claim ---------------------------------------------------------------------------- */

static void hash_leaf(const u8 *record, u8 *out) {
    static const u8 prefix = 0;
    SolBytes parts[2] = {{&prefix, 1}, {record, RECORD_SIZE}};
    sol_sha256(parts, 2, out);
}

static void hash_inner(const u8 *left, const u8 *right, u8 *out) {
    static const u8 prefix = 1;
    SolBytes parts[3] = {{&prefix, 1}, {left, 32}, {right, 32}};
    sol_sha256(parts, 3, out);
}

/* Recompute the root from the record, its index and the path; width from the header. */
static NOINLINE u64 check_path(const u8 *record, u64 index, u64 width, const SolBytes *siblings,
                               const u8 *root) {
    const u8 *path = siblings->addr;
    u64 path_len = siblings->len;
    u8 node[32];
    hash_leaf(record, node);
    u64 used = 0;
    while (width > 1) {
        if ((index ^ 1) < width) {
            CHECK(used < path_len, E_WRONG_MERKLE_PATH);
            const u8 *sibling = path + 32 * used++;
            if (index & 1) hash_inner(sibling, node, node);
            else hash_inner(node, sibling, node);
        }
        index >>= 1;
        width = (width + 1) >> 1;
    }
    CHECK(used == path_len && equal(node, root, 32), E_WRONG_MERKLE_PATH);
    return 0;
}

static NOINLINE u64 claim(const Input *in) {
    CHECK(in->count >= 9, E_NOT_ENOUGH_ACCOUNTS);
    const Account *payer = &in->accounts[0], *pool = &in->accounts[1], *report = &in->accounts[2];
    const Account *claims = &in->accounts[3], *vault = &in->accounts[4];
    const Account *destination = &in->accounts[5], *pool_authority = &in->accounts[6];
    CHECK(in->data_len >= 94, E_INVALID_INSTRUCTION);
    const u8 *d = in->data;
    u64 index = get_u32(d + 1);
    const u8 *record = d + 5;
    u64 path_len = d[93];
    const u8 *path = d + 94;
    CHECK(path_len <= MAX_PATH && in->data_len == 94 + 32 * path_len, E_INVALID_INSTRUCTION);

    TRY(expect_pool(pool, in->program_id));
    TRY(expect_writable(pool));
    u8 *p = pool->data;
    TRY(expect_ours(report, in->program_id, TAG_REPORT, REPORT_SIZE));
    TRY(expect_writable(report));
    u8 *r = report->data;
    CHECK(equal(r + REPORT_POOL, pool->key, 32), E_WRONG_ADDRESS);
    CHECK(r[REPORT_STATUS] == STATUS_ACCEPTED, E_NOT_ACCEPTED);
    CHECK(equal(vault->key, p + POOL_VAULT, 32), E_WRONG_ADDRESS);
    CHECK(equal(vault->owner, TOKEN_PROGRAM, 32), E_WRONG_ACCOUNT_OWNER);
    TRY(expect_writable(vault));
    CHECK(equal(in->accounts[7].key, TOKEN_PROGRAM, 32), E_WRONG_ADDRESS);
    CHECK(equal(in->accounts[8].key, SYSTEM_PROGRAM, 32), E_WRONG_ADDRESS);
    u8 authority_bump = p[POOL_AUTHORITY_BUMP];
    SolSignerSeed authority_seeds[3] = {{(const u8 *)"authority", 9}, {pool->key, 32},
                                        {&authority_bump, 1}};
    CHECK(equal(pool_authority->key, p + POOL_AUTHORITY_PDA, 32), E_WRONG_ADDRESS);

    const u8 *header = r + REPORT_HEADER;
    u64 count = get_u32(header + H_COUNT);
    CHECK(index < count, E_INDEX_OUT_OF_RANGE);
    SolBytes siblings = {path, path_len};
    TRY(check_path(record, index, count, &siblings, header + H_ROOT));

    CHECK(equal(destination->owner, TOKEN_PROGRAM, 32), E_WRONG_DESTINATION);
    CHECK(*destination->data_len == TOKEN_ACCOUNT_SIZE, E_WRONG_DESTINATION);
    CHECK(equal(destination->data, p + POOL_MINT, 32), E_WRONG_DESTINATION);
    CHECK(equal(destination->data + 32, record + R_PAYOUT, 32), E_WRONG_DESTINATION);
    CHECK(destination->data[108] == 1, E_WRONG_DESTINATION); /* initialized, not frozen */
    TRY(expect_writable(destination));

    u64 chunk = index / CHUNK_BITS, bit = index % CHUNK_BITS;
    u64 created = get_u16(r + REPORT_CHUNKS) & (1u << chunk);
    if (!created) {
        u8 key[23], seed[SEED_LEN];
        memcpy(key, r + REPORT_EPOCH, 8);
        memcpy(key + 8, r + REPORT_HASH, 14);
        key[22] = (u8)chunk;
        seed_of('C', key, seed);
        TRY(expect_seeded(pool_authority->key, seed, in->program_id, claims->key));
        SolSignerSeeds signer = {authority_seeds, 3};
        Seeded at = {pool_authority, seed, in->program_id, &signer};
        TRY(create_seeded(payer, claims, CLAIMS_SIZE, &at));
        u8 *c = claims->data;
        memcpy(c, TAG_CLAIMS, 8);
        memcpy(c + CLAIMS_REPORT, report->key, 32);
        put_u16(c + CLAIMS_CHUNK, (u16)chunk);
        memcpy(c + CLAIMS_PAYER, payer->key, 32);
        put_u16(r + REPORT_CHUNKS, (u16)(get_u16(r + REPORT_CHUNKS) | (1u << chunk)));
    }
    TRY(expect_ours(claims, in->program_id, TAG_CLAIMS, CLAIMS_SIZE));
    TRY(expect_writable(claims));
    u8 *c = claims->data;
    CHECK(equal(c + CLAIMS_REPORT, report->key, 32) && get_u16(c + CLAIMS_CHUNK) == chunk,
          E_WRONG_ADDRESS);
    u8 mask = (u8)(1 << (bit & 7));
    CHECK(!(c[CLAIMS_BITS + bit / 8] & mask), E_ALREADY_CLAIMED);

    u64 weight = get_u64(record + R_WEIGHT), flags = get_u16(record + R_FLAGS);
    u64 total = get_u64(header + H_TOTAL), reserved = get_u64(r + REPORT_RESERVED);
    u64 claimed = get_u64(r + REPORT_CLAIMED), amount = 0;
    if (weight == 0) {
        LOG("bwpool: record has weight 0; nothing paid");
    } else if (flags & FRAUD_FLAGS) {
        LOG("bwpool: record carries a fraud flag; nothing paid");
    } else {
        CHECK(weight <= total, E_ARITHMETIC_OVERFLOW);
        u64 hi, lo;
        mul128(reserved, weight, &hi, &lo);
        amount = div128(hi, lo, total);
    }
    CHECK(claimed + amount >= claimed && claimed + amount <= reserved, E_PAYOUT_EXCEEDS_RESERVED);
    u64 outstanding = get_u64(p + POOL_RESERVED);
    CHECK(amount <= outstanding, E_ARITHMETIC_OVERFLOW);

    c[CLAIMS_BITS + bit / 8] |= mask;
    put_u64(r + REPORT_CLAIMED, claimed + amount);
    put_u32(r + REPORT_CLAIMED_COUNT, get_u32(r + REPORT_CLAIMED_COUNT) + 1);
    put_u64(p + POOL_RESERVED, outstanding - amount);
    put_u64(p + POOL_PAID, get_u64(p + POOL_PAID) + amount);
    sol_log_64_(get_u64(r + REPORT_EPOCH), index, amount, weight, flags);
    if (amount == 0) return 0;

    u8 transfer[9];
    transfer[0] = 3; /* SPL Token Transfer { amount } */
    put_u64(transfer + 1, amount);
    SolAccountMeta metas[3] = {{vault->key, 1, 0}, {destination->key, 1, 0},
                               {pool_authority->key, 0, 1}};
    SolAccountInfo infos[3];
    info_of(vault, &infos[0]);
    info_of(destination, &infos[1]);
    info_of(pool_authority, &infos[2]);
    SolInstruction ix = {TOKEN_PROGRAM, metas, 3, transfer, 9};
    SolSignerSeeds signer = {authority_seeds, 3};
    return sol_invoke_signed_c(&ix, infos, 3, &signer, 1);
}

/* -- close_epoch ---------------------------------------------------------------------- */

static NOINLINE u64 close_epoch(const Input *in) {
    CHECK(in->count >= 3, E_NOT_ENOUGH_ACCOUNTS);
    const Account *pool = &in->accounts[0], *report = &in->accounts[1], *poster = &in->accounts[2];
    CHECK(in->data_len == 1, E_INVALID_INSTRUCTION);
    TRY(expect_pool(pool, in->program_id));
    TRY(expect_writable(pool));
    TRY(expect_ours(report, in->program_id, TAG_REPORT, REPORT_SIZE));
    u8 *p = pool->data, *r = report->data;
    CHECK(equal(r + REPORT_POOL, pool->key, 32), E_WRONG_ADDRESS);
    CHECK(equal(poster->key, r + REPORT_POSTER, 32), E_WRONG_ADDRESS);
    u64 epoch = get_u64(r + REPORT_EPOCH), last = get_u64(p + POOL_LAST_EPOCH);
    int any_accepted = get_u64(p + POOL_ACCEPTED) > 0;
    if (r[REPORT_STATUS] == STATUS_ACCEPTED) {
        u64 window = get_u64(p + POOL_WINDOW);
        CHECK(epoch <= ~0ULL - window && last >= epoch + window, E_CLAIM_WINDOW_OPEN);
    } else {
        CHECK(any_accepted && epoch <= last, E_CLAIM_WINDOW_OPEN);
    }
    u64 mask = get_u16(r + REPORT_CHUNKS), chunks = 0;
    for (u64 m = mask; m; m &= m - 1) chunks++;
    CHECK(in->count == 3 + 2 * chunks, E_CHUNKS_MISSING);
    u64 next = 3;
    for (u64 chunk = 0; chunk < MAX_CHUNKS; chunk++) {
        if (!(mask & (1u << chunk))) continue;
        const Account *claims = &in->accounts[next], *payer = &in->accounts[next + 1];
        next += 2;
        TRY(expect_ours(claims, in->program_id, TAG_CLAIMS, CLAIMS_SIZE));
        CHECK(equal(claims->data + CLAIMS_REPORT, report->key, 32) &&
              get_u16(claims->data + CLAIMS_CHUNK) == chunk, E_CHUNKS_MISSING);
        CHECK(equal(payer->key, claims->data + CLAIMS_PAYER, 32), E_WRONG_ADDRESS);
        TRY(close_into(claims, payer));
    }
    if (r[REPORT_STATUS] == STATUS_ACCEPTED) {
        u64 reserved = get_u64(r + REPORT_RESERVED), claimed = get_u64(r + REPORT_CLAIMED);
        u64 outstanding = get_u64(p + POOL_RESERVED);
        CHECK(claimed <= reserved && reserved - claimed <= outstanding, E_ARITHMETIC_OVERFLOW);
        put_u64(p + POOL_RESERVED, outstanding - (reserved - claimed));
        LOG("bwpool: epoch closed (epoch, released)");
        sol_log_64_(epoch, reserved - claimed, 0, 0, 0);
    } else {
        LOG("bwpool: unaccepted tally closed");
    }
    return close_into(report, poster);
}

/* -- entrypoint ----------------------------------------------------------------------- */

u64 entrypoint(u8 *input) {
    Input in;
    parse_input(input, &in);
    if (in.data_len < 1) return fail(E_INVALID_INSTRUCTION);
    switch (in.data[0]) {
    case 0: return initialize(&in);
    case 1: return post_report(&in);
    case 2: return claim(&in);
    case 3: return close_epoch(&in);
    case 4: return extend_set(&in);
    default: return fail(E_INVALID_INSTRUCTION);
    }
}

/* Test program for programs/sbpf_link.py (built by tests/unit/test_sbpf_link.py).
 *
 * It exercises what the linker must get right: strings and constant tables in several
 * rodata sections (.rodata.str1.1, .rodata, .rodata.cst*), a table of string pointers and a
 * table of function pointers (R_BPF_64_ABS64 in rodata), calls between non-inlined static
 * functions (resolved by the compiler), calls to global functions (R_BPF_64_32 against a
 * function symbol), a call into another code section (against a section symbol), and
 * syscalls (dynamic R_BPF_64_32).
 *
 * Instruction data, first byte is the operation:
 *   0, bytes...  log a greeting, sha256 of the whole instruction data via sol_log_data,
 *                then sol_log_64_(data length, digest[0], digest[1], digest[30], digest[31])
 *   1, u32 LE n  fail with custom error n (n = 0 becomes 1)
 *   2, i         log names[i % 4], then sol_log_64_(i, ops[i % 4](1000 + i, 7), mix(i), 0, 0)
 * Accounts, if any, are skipped; the number seen is logged with sol_log_64_ by operation 0.
 */

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

typedef struct {
    const u8 *addr;
    u64 len;
} SolBytes;

void sol_log_(const char *message, u64 len);
void sol_log_64_(u64 a, u64 b, u64 c, u64 d, u64 e);
u64 sol_sha256(const SolBytes *values, u64 count, u8 *digest);
void sol_log_data(const SolBytes *values, u64 count);

#define HEAP ((u8 *)0x300000000UL)
#define ERROR_INVALID_ARGUMENT (2UL << 32)
#define ERROR_INVALID_INSTRUCTION_DATA (3UL << 32)

static const char *const names[4] = {"alpha", "beta", "gamma", "delta"};
static const u64 mixers[4] = {0x9e3779b97f4a7c15UL, 0xbf58476d1ce4e5b9UL,
                              0x94d049bb133111ebUL, 0x2545f4914f6cdd1dUL};

/* Non-static and not inlined: calls to them are relocations against their symbols. This is
 * also how a program supplies memcpy/memset if it wants them as functions. */
__attribute__((noinline)) void *memcpy(void *dst, const void *src, u64 n) {
    u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

__attribute__((noinline)) void *memset(void *dst, int c, u64 n) {
    u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

__attribute__((noinline)) static u64 str_len(const char *s) {
    u64 n = 0;
    while (s[n]) n++;
    return n;
}

__attribute__((noinline)) static void log_str(const char *s) { sol_log_(s, str_len(s)); }

__attribute__((noinline)) static u64 read_u64(const u8 *p) {
    u64 v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* In its own code section: the call to it is a relocation against a section symbol. */
__attribute__((noinline, section(".text.cold"))) static u64 mix(u64 x) {
    x ^= x >> 31;
    return x * mixers[x & 3];
}

__attribute__((noinline)) static u64 op_add(u64 a, u64 b) { return a + b; }
__attribute__((noinline)) static u64 op_sub(u64 a, u64 b) { return a - b; }
__attribute__((noinline)) static u64 op_mul(u64 a, u64 b) { return a * b; }
__attribute__((noinline)) static u64 op_xor(u64 a, u64 b) { return a ^ b; }

typedef u64 (*binop)(u64, u64);
static const binop ops[4] = {op_add, op_sub, op_mul, op_xor};

/* Skip the serialized accounts; returns a pointer to the instruction-data length. */
__attribute__((noinline)) static const u8 *skip_accounts(const u8 *in, u64 *count) {
    u64 n = read_u64(in);
    *count = n;
    in += 8;
    for (u64 i = 0; i < n; i++) {
        if (in[0] != 0xff) { /* duplicate: index and 7 bytes of padding */
            in += 8;
            continue;
        }
        in += 8 + 32 + 32 + 8; /* flags and padding, key, owner, lamports */
        u64 data_len = read_u64(in);
        in += 8 + data_len + 10240;
        in = (const u8 *)(((u64)in + 7) & ~7UL);
        in += 8; /* rent epoch */
    }
    return in;
}

__attribute__((noinline)) static u64 op_hash(const u8 *data, u64 len, u64 accounts) {
    u8 digest[32];
    memset(digest, 0, sizeof digest);
    memcpy(HEAP, data, len); /* hash a copy on the heap: the heap is mapped and writable */
    SolBytes input = {HEAP, len};
    log_str("sbpf fixture: hello");
    if (sol_sha256(&input, 1, digest) != 0) return ERROR_INVALID_ARGUMENT;
    SolBytes out = {digest, sizeof digest};
    sol_log_data(&out, 1);
    sol_log_64_(len, digest[0], digest[1], digest[30], digest[31]);
    sol_log_64_(accounts, 0, 0, 0, 0);
    return 0;
}

__attribute__((noinline)) static u64 op_table(u64 i) {
    log_str(names[i % 4]);
    sol_log_64_(i, ops[i % 4](1000 + i, 7), mix(i), 0, 0);
    return 0;
}

u64 entrypoint(const u8 *input) {
    u64 accounts;
    const u8 *p = skip_accounts(input, &accounts);
    u64 len = read_u64(p);
    const u8 *data = p + 8;
    if (len == 0) return ERROR_INVALID_INSTRUCTION_DATA;
    switch (data[0]) {
    case 0:
        return op_hash(data, len, accounts);
    case 1: {
        if (len < 5) return ERROR_INVALID_INSTRUCTION_DATA;
        u32 code = data[1] | data[2] << 8 | data[3] << 16 | (u32)data[4] << 24;
        return code ? code : 1;
    }
    case 2:
        if (len < 2) return ERROR_INVALID_INSTRUCTION_DATA;
        return op_table(data[1]);
    default:
        return ERROR_INVALID_INSTRUCTION_DATA;
    }
}

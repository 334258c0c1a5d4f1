/* cpu.h - what this CPU can do, read from cpuid (and xgetbv: whether the
 * OS saves the vector registers), never from the environment: the matrix-
 * product layer (gemm.h) picks its kernels by it.  rt_cpu() fills the
 * answer once per process; rt_cpu_isa_name names the best vector ISA
 * found, for reports. */
#ifndef STRATA_CPU_H
#define STRATA_CPU_H
#include <stdbool.h>

typedef struct RtCpu {
    bool avx2, fma;            /* AVX2 and FMA3, with the OS saving ymm */
    bool avx512;               /* AVX-512 F, BW, VL, DQ, with the OS saving zmm */
    bool avx512_bf16;          /* VDPBF16PS, VCVTNE2PS2BF16 */
    char vendor[16];           /* "AuthenticAMD", "GenuineIntel" */
    int family, model, stepping;
    char brand[64];            /* "AMD EPYC 9R14 96-Core Processor", trimmed */
} RtCpu;

const RtCpu *rt_cpu(void);
/* "avx512_bf16", "avx512", "avx2" or "generic". */
const char *rt_cpu_isa_name(const RtCpu *c);
/* A short identity of the CPU model for caches: "AuthenticAMD-25-17". */
void rt_cpu_key(const RtCpu *c, char *out, int n);
#endif

/* cpu.c - cpuid and xgetbv (cpu.h).  On other architectures every flag is
 * false and the generic kernels run. */
#include "core/cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(RtCpu *c)
{
    unsigned a, b, cx, d, max = __get_cpuid_max(0, NULL);
    if (max < 1)
        return;
    __cpuid(0, a, b, cx, d);
    memcpy(c->vendor, &b, 4), memcpy(c->vendor + 4, &d, 4), memcpy(c->vendor + 8, &cx, 4);
    __cpuid(1, a, b, cx, d);
    int fam = (a >> 8) & 15, mod = (a >> 4) & 15;
    if (fam == 15)
        fam += (a >> 20) & 255;
    if (fam == 6 || fam >= 15)
        mod += ((a >> 16) & 15) << 4;
    c->family = fam, c->model = mod, c->stepping = a & 15;
    bool osxsave = cx & (1u << 27), fma = cx & (1u << 12), avx = cx & (1u << 28);
    unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, cx, d);
        bool avx2 = b & (1u << 5), f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
        c->avx2 = avx && avx2 && ymm;
        c->fma = fma && ymm;
        c->avx512 = f && dq && bw && vl && zmm;
        __cpuid_count(7, 1, a, b, cx, d);
        c->avx512_bf16 = c->avx512 && (a & (1u << 5));
    }
    unsigned ext = __get_cpuid_max(0x80000000, NULL);
    if (ext >= 0x80000004) {
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
        char s[49];
        memcpy(s, r, 48);
        s[48] = 0;
        char *p = s;
        while (*p == ' ')
            p++;
        snprintf(c->brand, sizeof c->brand, "%s", p);
        for (size_t n = strlen(c->brand); n > 0 && c->brand[n - 1] == ' '; n--)
            c->brand[n - 1] = 0;
    }
}
#else
static void detect(RtCpu *c)
{
    (void)c;
}
#endif

static RtCpu cpu;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    detect(&cpu);
    if (!cpu.vendor[0])
        snprintf(cpu.vendor, sizeof cpu.vendor, "unknown");
}

const RtCpu *rt_cpu(void)
{
    pthread_once(&once, init);
    return &cpu;
}

const char *rt_cpu_isa_name(const RtCpu *c)
{
    return c->avx512_bf16 ? "avx512_bf16" : c->avx512 ? "avx512" : c->avx2 && c->fma ? "avx2" : "generic";
}

void rt_cpu_key(const RtCpu *c, char *out, int n)
{
    snprintf(out, (size_t)n, "%s-%d-%d", c->vendor, c->family, c->model);
}

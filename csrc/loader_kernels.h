// Pure C++ loops behind mmengine._fastloader: no Python, no numpy, no validation.
//
// Every function here trusts its caller (fastloader.cpp) to have checked shapes, ranges and
// dtypes once; the loops then run on raw pointers without bounds checks and without the GIL.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastloader {

// Runs fn(begin, end, chunk) on `threads` contiguous chunks of [0, n), chunk k covering
// [k * ceil(n / threads), ...). Chunks are fixed by (n, threads) alone, so callers that write
// chunk k's results to slot k get output that does not depend on scheduling. If a thread cannot
// be started its chunk runs on the calling thread; an exception thrown by any chunk is rethrown
// here after every thread has been joined.
template <typename Fn>
void parallel_chunks(int64_t n, int threads, Fn&& fn) {
    if (threads <= 1 || n < 2) {
        fn(int64_t{0}, n, 0);
        return;
    }
    const int64_t chunk = (n + threads - 1) / threads;
    std::vector<std::exception_ptr> errors(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    auto run = [&fn, &errors](int64_t b, int64_t e, int k) {
        try {
            fn(b, e, k);
        } catch (...) {
            errors[k] = std::current_exception();
        }
    };
    for (int k = 0; k < threads; ++k) {
        const int64_t b = std::min(n, k * chunk);
        const int64_t e = std::min(n, b + chunk);
        if (k == threads - 1) {
            run(b, e, k);  // the calling thread does the last chunk itself
            break;
        }
        try {
            pool.emplace_back(run, b, e, k);
        } catch (...) {
            run(b, e, k);
        }
    }
    for (auto& t : pool) t.join();
    for (auto& err : errors)
        if (err) std::rethrow_exception(err);
}

// Growable int64 output with uninitialised slack (std::vector would zero-fill every growth),
// so the scan can store a candidate before knowing whether it counts. The hot loop copies
// (data, size) into locals and writes them back (`size` set directly), so that its stores
// cannot alias the bookkeeping.
struct Positions {
    explicit Positions(size_t capacity_hint = 0) { grow(std::max<size_t>(capacity_hint, 64)); }
    // Makes room for `n` more entries after the first `used`; returns the (maybe moved) data.
    int64_t* room(size_t used, size_t n) {
        if (used + n > cap) grow(std::max(cap * 2, used + n), used);
        return data.get();
    }
    std::unique_ptr<int64_t[]> data;
    size_t size = 0, cap = 0;

   private:
    void grow(size_t new_cap, size_t used = 0) {
        std::unique_ptr<int64_t[]> bigger(new int64_t[new_cap]);
        if (used) std::memcpy(bigger.get(), data.get(), used * sizeof(int64_t));
        data = std::move(bigger);
        cap = new_cap;
    }
};

// Paragraph scan.
//
// Appends to `out`, in increasing order, every p in [p_begin, p_end) such that
//     tok[p-k .. p) == sep[0 .. k)   and   tok[p] != sep[0]
// i.e. the first token after a separator that is not itself the start of another separator
// (a run of separators yields one p, after the run).
// Preconditions: k >= 1, p_begin >= k, tok[p] is readable for every p < p_end.
//
// Algorithm: the separator would begin at i = p - k. Positions are visited 64 at a time; SIMD
// compares of shifted unaligned loads build a 64-bit mask of the positions where
//     kMode 1 (k == 1):  tok[i] == s0 && tok[i+1] != s0                      (exact)
//     kMode 2 (k == 2):  tok[i] == s0 && tok[i+1] == s1 && tok[i+2] != s0    (exact)
//     kMode 3 (k >= 3):  tok[i] == s0 && tok[i+1] == s1      (necessary; checked exactly)
// and only the set bits are visited (count-trailing-zeros). Hits are rare and unpredictable,
// so the first hit of a block is stored without a branch (see scan_simd); the scan then runs
// at about memory-copy speed whatever the hit rate of real text. The last < 64 positions, and
// targets without SSE2, use the scalar test.
template <typename Tok>
inline bool separator_ends_at(const Tok* tok, const Tok* sep, int64_t k, int64_t i) {
    for (int64_t j = 0; j < k; ++j)
        if (tok[i + j] != sep[j]) return false;
    return tok[i + k] != sep[0];
}

#if defined(__SSE2__)
template <typename Tok>
struct Lanes;  // 16 positions t[0..16) -> 16-bit mask of where cond(t + j) holds

template <>
struct Lanes<uint16_t> {
    __m128i v0, v1;
    Lanes(uint16_t s0, uint16_t s1)
        : v0(_mm_set1_epi16(static_cast<short>(s0))), v1(_mm_set1_epi16(static_cast<short>(s1))) {}
    static __m128i eq(const uint16_t* p, __m128i v) {
        return _mm_cmpeq_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), v);
    }
    template <int kMode>
    __m128i cond8(const uint16_t* t) const {  // 8 lanes of 0xFFFF / 0
        const __m128i a = eq(t, v0);
        if constexpr (kMode == 1) return _mm_andnot_si128(eq(t + 1, v0), a);
        const __m128i ab = _mm_and_si128(a, eq(t + 1, v1));
        if constexpr (kMode == 2) return _mm_andnot_si128(eq(t + 2, v0), ab);
        return ab;
    }
    template <int kMode>
    uint32_t mask16(const uint16_t* t) const {
        // packs turns each 16-bit lane (0 / -1) into one byte, movemask takes one bit per byte
        return static_cast<uint32_t>(
            _mm_movemask_epi8(_mm_packs_epi16(cond8<kMode>(t), cond8<kMode>(t + 8))));
    }
};

template <>
struct Lanes<uint32_t> {
    __m128i v0, v1;
    Lanes(uint32_t s0, uint32_t s1)
        : v0(_mm_set1_epi32(static_cast<int>(s0))), v1(_mm_set1_epi32(static_cast<int>(s1))) {}
    static __m128i eq(const uint32_t* p, __m128i v) {
        return _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), v);
    }
    template <int kMode>
    uint32_t cond4(const uint32_t* t) const {  // 4-bit mask
        const __m128i a = eq(t, v0);
        __m128i c;
        if constexpr (kMode == 1) {
            c = _mm_andnot_si128(eq(t + 1, v0), a);
        } else {
            c = _mm_and_si128(a, eq(t + 1, v1));
            if constexpr (kMode == 2) c = _mm_andnot_si128(eq(t + 2, v0), c);
        }
        return static_cast<uint32_t>(_mm_movemask_ps(_mm_castsi128_ps(c)));
    }
    template <int kMode>
    uint32_t mask16(const uint32_t* t) const {
        return cond4<kMode>(t) | (cond4<kMode>(t + 4) << 4) | (cond4<kMode>(t + 8) << 8) |
               (cond4<kMode>(t + 12) << 12);
    }
};

template <int kMode, typename Tok>
int64_t scan_simd(const Tok* tok, const Tok* sep, int64_t k, int64_t i, int64_t i_end,
                  Positions& out) {
    const Lanes<Tok> lanes(sep[0], k >= 2 ? sep[1] : Tok{0});
    size_t n = out.size;
    size_t cap = out.cap;
    int64_t* buf = out.data.get();
    // Reads reach tok[i + 63 + max(k, 2)] at most, which the preconditions allow.
    for (; i + 64 <= i_end; i += 64) {
        if (n + 64 > cap) {
            buf = out.room(n, 64);
            cap = out.cap;
        }
        uint64_t m = static_cast<uint64_t>(lanes.template mask16<kMode>(tok + i)) |
                     static_cast<uint64_t>(lanes.template mask16<kMode>(tok + i + 16)) << 16 |
                     static_cast<uint64_t>(lanes.template mask16<kMode>(tok + i + 32)) << 32 |
                     static_cast<uint64_t>(lanes.template mask16<kMode>(tok + i + 48)) << 48;
        if constexpr (kMode == 3) {  // candidates still need the full separator check
            while (m) {
                const int64_t j = __builtin_ctzll(m);
                m &= m - 1;
                if (separator_ends_at(tok, sep, k, i + j)) buf[n++] = i + j + k;
            }
        } else {
            // Branch-free for the common cases (0 or 1 hit in 64 positions, hits being rare and
            // unpredictable): write the first hit unconditionally into the slack (bit 63 is a
            // sentinel for m == 0), count it only if it exists; further hits take the loop.
            // (A branch per block instead cost ~25 ns per paragraph in mispredictions.)
            buf[n] = i + k + __builtin_ctzll(m | (uint64_t{1} << 63));
            n += m != 0;
            m &= m - 1;
            while (m) {
                buf[n++] = i + k + __builtin_ctzll(m);
                m &= m - 1;
            }
        }
    }
    out.size = n;
    return i;
}
#endif

template <typename Tok>
void scan_paragraphs(const Tok* tok, const Tok* sep, int64_t k, int64_t p_begin, int64_t p_end,
                     Positions& out) {
    int64_t i = p_begin - k;
    const int64_t i_end = p_end - k;
#if defined(__SSE2__)
    if (k == 1)
        i = scan_simd<1>(tok, sep, k, i, i_end, out);
    else if (k == 2)
        i = scan_simd<2>(tok, sep, k, i, i_end, out);
    else
        i = scan_simd<3>(tok, sep, k, i, i_end, out);
#endif
    for (; i < i_end; ++i)
        if (separator_ends_at(tok, sep, k, i)) {
            out.room(out.size, 1)[out.size] = i + k;
            ++out.size;
        }
}

// Largest token in tok[s .. s+len) over all starts s; used only before a narrowing copy
// (uint32 tokens into an int32 / uint16 output) to refuse values that would not fit.
template <typename Tok>
Tok max_in_windows(const Tok* tok, const int64_t* starts, int64_t n_starts, int64_t len) {
    Tok m = 0;
    for (int64_t r = 0; r < n_starts; ++r) {
        const Tok* t = tok + starts[r];
        for (int64_t j = 0; j < len; ++j) m = std::max(m, t[j]);
    }
    return m;
}

// Runtime dispatch to an AVX2 build of the copy loops on x86-64 (GCC / Clang): the widening
// copy uint16 -> int64 is store-bound, and 32-byte stores halve the number of stores over the
// SSE2 baseline the extension is compiled for. The loop bodies are written once
// (FASTLOADER_INLINE functions) and instantiated twice, once inside a target("avx2") wrapper.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTLOADER_X86_DISPATCH 1
#define FASTLOADER_INLINE inline __attribute__((always_inline))
inline bool cpu_has_avx2() {
    static const bool has = __builtin_cpu_supports("avx2");
    return has;
}
#else
#define FASTLOADER_X86_DISPATCH 0
#define FASTLOADER_INLINE inline
#endif

// Copies n tokens into the output dtype (a widening or same-width copy; memcpy when the
// types are identical). Written as a plain loop so that it vectorises.
template <typename Tok, typename Out>
FASTLOADER_INLINE void copy_tokens(const Tok* src, Out* dst, int64_t n) {
    if constexpr (std::is_same_v<Tok, Out>) {
        std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(Tok));
    } else {
        for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<Out>(src[j]);
    }
}

// Window gather: x[r, :] = tok[starts[r] .. starts[r]+T), and when y != nullptr
// y[r, :] = tok[starts[r]+1 .. starts[r]+T+1). Rows [r_begin, r_end) only, so that
// rows can be split across threads. Preconditions: every window (plus one for y) is in range.
template <typename Tok, typename Out>
FASTLOADER_INLINE void gather_rows_body(const Tok* tok, const int64_t* starts, int64_t r_begin,
                                        int64_t r_end, int64_t T, Out* x, Out* y) {
    if constexpr (std::is_same_v<Tok, Out>) {
        for (int64_t r = r_begin; r < r_end; ++r) {
            const Tok* src = tok + starts[r];
            copy_tokens(src, x + r * T, T);
            if (y != nullptr) copy_tokens(src + 1, y + r * T, T);
        }
    } else {
        // Widening copy. Windows start at random places in a large file, and a widening loop
        // issues 4 stores per load, which keeps few cache misses in flight; so ~32 KB of windows
        // (L1-sized) are first staged with memcpy, whose wide loads overlap the misses, and
        // then widened from cache: ~20% faster on B=64, T=1024 (software prefetch did nothing).
        if (r_begin >= r_end) return;  // (the stage below is sized by T, which may be huge)
        const int64_t w = T + 1;
        const int64_t chunk = std::min<int64_t>(
            r_end - r_begin,
            std::max<int64_t>(1, (int64_t{32} << 10) / (w * static_cast<int64_t>(sizeof(Tok)))));
        std::vector<Tok> stage(static_cast<size_t>(chunk * w));
        for (int64_t r0 = r_begin; r0 < r_end; r0 += chunk) {
            const int64_t r1 = std::min(r_end, r0 + chunk);
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t len = (y != nullptr) ? w : T;
                std::memcpy(stage.data() + (r - r0) * w, tok + starts[r],
                            static_cast<size_t>(len) * sizeof(Tok));
            }
            for (int64_t r = r0; r < r1; ++r) {
                const Tok* src = stage.data() + (r - r0) * w;
                copy_tokens(src, x + r * T, T);
                if (y != nullptr) copy_tokens(src + 1, y + r * T, T);
            }
        }
    }
}

#if FASTLOADER_X86_DISPATCH
template <typename Tok, typename Out>
__attribute__((target("avx2"))) void gather_rows_avx2(const Tok* tok, const int64_t* starts,
                                                      int64_t r_begin, int64_t r_end, int64_t T,
                                                      Out* x, Out* y) {
    gather_rows_body(tok, starts, r_begin, r_end, T, x, y);
}
#endif

template <typename Tok, typename Out>
void gather_rows(const Tok* tok, const int64_t* starts, int64_t r_begin, int64_t r_end, int64_t T,
                 Out* x, Out* y) {
#if FASTLOADER_X86_DISPATCH
    if (cpu_has_avx2()) return gather_rows_avx2(tok, starts, r_begin, r_end, T, x, y);
#endif
    gather_rows_body(tok, starts, r_begin, r_end, T, x, y);
}

// Document gather: row r = [cls, tok[begin[r] .. begin[r] + count[r]), pad ...];
// lengths[r] = 1 + count[r].
// Preconditions: T >= 1, 0 <= count[r] <= T - 1, every range inside the token array,
// cls / pad representable in Out.
template <typename Tok, typename Out>
void gather_docs(const Tok* tok, const int64_t* begin, const int64_t* count, int64_t n_rows,
                 int64_t T, Out cls, Out pad, Out* x, int64_t* lengths) {
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t len = count[r];
        Out* row = x + r * T;
        row[0] = cls;
        copy_tokens(tok + begin[r], row + 1, len);
        std::fill(row + 1 + len, row + T, pad);
        lengths[r] = 1 + len;
    }
}

}  // namespace fastloader

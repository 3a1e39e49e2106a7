import CBuildFeatures

/// What the library was compiled for, as constants the optimizer folds: the clang importer
/// evaluates `CBuildFeatures`' macros with this module's own `-Xcc` flags, the same flags that
/// steer Swift's code generation for SIMD types.
package enum BuildTarget {
    /// 256-bit or wider vector registers (AVX): a `SIMD16<Float>` is one or two registers, so
    /// kernels can afford a second accumulator set.
    static var hasWideVectors: Bool {
        @inline(__always) get { topnsigma_build_avx() != 0 }
    }

    /// Fused multiply-add instructions (FMA3).
    static var hasFMA: Bool {
        @inline(__always) get { topnsigma_build_fma() != 0 }
    }

    /// Hardware half→float conversion (F16C `vcvtph2ps`).
    static var hasF16C: Bool {
        @inline(__always) get { topnsigma_build_f16c() != 0 }
    }

    /// 512-bit vectors (AVX-512F): one `SIMD16<Float>` per register.
    static var hasAVX512: Bool {
        @inline(__always) get { topnsigma_build_avx512f() != 0 }
    }

    /// `a * b + c`: one `vfmadd` where the build has FMA, a multiply and an add otherwise (the
    /// generic `addingProduct` calls `fmaf` per lane without FMA).
    @inline(__always)
    static func multiplyAdd(_ a: SIMD16<Float>, _ b: SIMD16<Float>, _ c: SIMD16<Float>) -> SIMD16<Float> {
        hasFMA ? c.addingProduct(a, b) : c + a * b
    }

    /// `a * b + c` in double lanes, as ``multiplyAdd(_:_:_:)-(SIMD16<Float>,_,_)`` is in Float.
    @inline(__always)
    static func multiplyAdd(_ a: SIMD8<Double>, _ b: SIMD8<Double>, _ c: SIMD8<Double>) -> SIMD8<Double> {
        hasFMA ? c.addingProduct(a, b) : c + a * b
    }
}

extension BuildTarget {
    /// The SIMD features this build of the library was compiled for, space-separated: `"sse2"`
    /// for the default x86-64 build, `"avx2 fma f16c avx512f"` for the host build that
    /// `scripts/simd-flags` selects on an AVX-512 CPU. Static storage, for the C ABI's
    /// `tns_build_info`.
    package static var features: StaticString {
        #if arch(x86_64)
        switch (topnsigma_build_avx2() != 0 && hasFMA, hasF16C, hasAVX512) {
        case (true, true, true): return "avx2 fma f16c avx512f"
        case (true, false, true): return "avx2 fma avx512f"
        case (true, true, false): return "avx2 fma f16c"
        case (true, false, false): return "avx2 fma"
        default: return hasWideVectors ? "avx" : "sse2"
        }
        #elseif arch(arm64)
        return "neon"
        #else
        return "generic"
        #endif
    }
}

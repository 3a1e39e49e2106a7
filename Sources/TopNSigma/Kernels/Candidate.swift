/// One surviving token: its id and its logit.
package struct Candidate: Sendable, Equatable {
    /// Token id (index in the row).
    package var index: Int32
    /// The token's raw logit.
    package var logit: Float

    /// A candidate for token `index` with its raw `logit`.
    @inlinable
    package init(index: Int32, logit: Float) {
        self.index = index
        self.logit = logit
    }
}

/// The order-preserving integer encoding of a Float that is not NaN: `key(a) < key(b)` exactly
/// when `a < b`, so that "raise to" is an integer maximum (split rows' shared threshold) and a
/// bisection over Floats runs over integers (``TopKBound/kthLargest(_:count:k:)``).
enum OrderedKey {
    /// The encoding of `x` (not NaN).
    @inline(__always)
    static func key(_ x: Float) -> UInt32 {
        let bits = x.bitPattern
        return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
    }

    /// The Float whose encoding is `key`.
    @inline(__always)
    static func value(_ key: UInt32) -> Float {
        Float(bitPattern: key & 0x8000_0000 != 0 ? key & 0x7FFF_FFFF : ~key)
    }
}

extension Candidate {
    /// Whether `a` comes before `b` in key order: higher logit first, then lower token id (the
    /// sort-based reference's order, probability descending and ties by lower id, at any
    /// temperature).
    @inline(__always)
    static func precedes(_ a: Candidate, _ b: Candidate) -> Bool {
        a.logit > b.logit || (a.logit == b.logit && a.index < b.index)
    }

    /// ``precedes(_:_:)`` as 0 or 1, computed without a branch.
    @inline(__always)
    static func precedesFlag(_ a: Candidate, _ b: Candidate) -> Int {
        let above = a.logit > b.logit ? 1 : 0
        let tie = (a.logit == b.logit ? 1 : 0) & (a.index < b.index ? 1 : 0)
        return above | tie
    }
}

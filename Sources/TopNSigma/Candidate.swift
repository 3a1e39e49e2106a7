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

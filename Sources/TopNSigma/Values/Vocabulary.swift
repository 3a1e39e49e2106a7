/// A token id: the index of a logit in its row, `0..<vocabularySize`. 32 bits, as the C ABI's
/// `int32_t`, llama.cpp's `llama_token` and numpy's `int32` ids.
public typealias TokenID = Int32

/// The vocabulary sizes every interface accepts: the Swift API, the C ABI (`TNS_MAX_VOCAB_SIZE`,
/// `tns_max_vocab_size()`), the Python package and the CLI all check against this one constant.
public enum Vocabulary {
    /// The largest vocabulary: `2^31 − 2` logits per row. Every token id fits ``TokenID`` with
    /// `Int32.max` to spare (never an id), and the size itself fits `int32_t`.
    public static let maximumSize = Int(Int32.max) - 1
}

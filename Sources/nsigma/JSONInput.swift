import Foundation

// The JSON inputs of `nsigma` (`--logit-bias`, `--history`, `--drafts`) follow one set of rules,
// each a usage error (exit 2) with a message naming the option, the entry and the key:
// - the file is UTF-8 JSON, and no object holds the same key twice (JSONSerialization would keep
//   the last value silently; the library would add up duplicate biases);
// - an object holds only the keys its option names;
// - a token id, in an array or as a `--logit-bias` key, is an integer that fits 64 bits: an array
//   element must be a JSON number without a fraction (`1e30` is out of range, `4.5` is not an
//   integer), a key must be spelled as a canonical decimal integer (`"5"`; not `"+5"`, `"05"`,
//   `"5.0"`, `" 5"` or `"-0"`). A token id outside `0..<V` that fits is not a usage error: it
//   fails its row (or request) only, as the library reports it.

/// The JSON value in the file at `path`, or a ``UsageError`` naming `option`: unreadable, not
/// UTF-8, not valid JSON, or an object that holds a key twice.
func readJSON(_ path: String, option: String) throws -> Any {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw UsageError(message: "cannot read \(option) \(path)")
    }
    let value: Any
    do {
        value = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
    } catch {
        let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
        throw UsageError(message: "\(option) \(path) is not valid JSON: \(detail)")
    }
    // JSONSerialization also reads UTF-16 and UTF-32; the duplicate-key scan reads UTF-8 only.
    guard String(data: data, encoding: .utf8) != nil else {
        throw UsageError(message: "\(option) \(path) is not UTF-8")
    }
    if let duplicate = duplicateKey(in: [UInt8](data)) {
        let place = duplicate.entry.map { "entry \($0) has" } ?? "the object has"
        throw UsageError(
            message:
                "\(option) \(path): \(place) the key \(jsonString(duplicate.key)) twice (a key may occur only once)")
    }
    return value
}

/// The first key that one object of `json` (valid JSON text, UTF-8) holds twice, and the index
/// of the top-level array entry it is in (nil when the top level is not an array). Keys are
/// compared decoded (`"5"` and `"\u0035"` are the same key) and as Swift strings compare, as
/// JSONSerialization's dictionaries merge them.
func duplicateKey(in json: [UInt8]) -> (key: String, entry: Int?)? {
    /// An open object or array; an object's keys so far (mutated in place: no copy per key).
    struct Container {
        var isObject: Bool
        var expectingKey = false
        var keys: Set<String> = []
    }
    var stack: [Container] = []
    var entry: Int?
    var i = 0
    while i < json.count {
        switch json[i] {
        case UInt8(ascii: "{"):
            if stack.isEmpty { entry = nil }
            stack.append(Container(isObject: true, expectingKey: true))
        case UInt8(ascii: "["):
            if stack.isEmpty { entry = 0 }
            stack.append(Container(isObject: false))
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            stack.removeLast()
        case UInt8(ascii: ","):
            if let top = stack.indices.last, stack[top].isObject {
                stack[top].expectingKey = true
            } else if stack.count == 1 {
                entry? += 1
            }
        case UInt8(ascii: ":"):
            stack[stack.count - 1].expectingKey = false
        case UInt8(ascii: "\""):
            // The string's closing quote: the text is valid JSON, so an escape is a backslash
            // and one more byte (a \uXXXX escape's hex digits are not quotes).
            var end = i + 1
            var escaped = false
            while json[end] != UInt8(ascii: "\"") {
                if json[end] == UInt8(ascii: "\\") {
                    escaped = true
                    end += 1
                }
                end += 1
            }
            if let top = stack.indices.last, stack[top].isObject && stack[top].expectingKey {
                let key =
                    escaped
                    ? (try? JSONSerialization.jsonObject(with: Data(json[i...end]), options: [.fragmentsAllowed]))
                        as? String ?? String(decoding: json[(i + 1)..<end], as: UTF8.self)
                    : String(decoding: json[(i + 1)..<end], as: UTF8.self)
                if !stack[top].keys.insert(key).inserted { return (key, entry) }
                stack[top].expectingKey = false
            }
            i = end
        default:
            break
        }
        i += 1
    }
    return nil
}

/// Throws a ``UsageError`` for the first key of `object` that is not one of `allowed`.
func checkKeys(_ object: [String: Any], allowed: [String], what: String) throws {
    for key in object.keys.sorted() where !allowed.contains(key) {
        let names = allowed.map(jsonString)
        let list = names.count == 2 ? "\(names[0]) and \(names[1])" : names.joined(separator: ", ")
        throw UsageError(message: "\(what) has the unknown key \(jsonString(key)) (only \(list))")
    }
}

/// A JSON number (JSONSerialization's NSNumber), not a boolean: `true` and `false` come back as
/// NSNumbers too, with the type code of `char`.
func jsonNumber(_ value: Any) -> NSNumber? {
    guard let number = value as? NSNumber else { return nil }
    return String(cString: number.objCType) == "c" ? nil : number
}

/// The number's exact integer value, or nil when it has a fraction or does not fit 64 bits.
func jsonInteger(_ number: NSNumber) -> Int? {
    let d = number.doubleValue
    guard d.isFinite, d.rounded(.towardZero) == d, d.magnitude < 0x1p63 else { return nil }
    let type = String(cString: number.objCType)
    // Integer type codes hold the value exactly; a double (or a decimal) is integral here.
    return type == "d" || type == "f" || number is NSDecimalNumber ? Int(d) : Int(number.int64Value)
}

/// A token id in a JSON array (`what` names the element): an integer that fits 64 bits.
func jsonTokenID(_ value: Any, what: String) throws -> Int {
    guard let number = jsonNumber(value) else { throw UsageError(message: "\(what) is not a number") }
    if let token = jsonInteger(number) { return token }
    let d = number.doubleValue
    throw UsageError(
        message: d.isFinite && d.rounded(.towardZero) == d
            ? "\(what) (\(number)) is not a token id: out of range (token ids are 64-bit integers)"
            : "\(what) (\(number)) is not a token id: not an integer")
}

/// A token id spelled as a JSON object key (`--logit-bias`): a canonical decimal integer that
/// fits 64 bits (`0`, or an optional `-` and digits without a leading zero).
func jsonTokenKey(_ key: String, what: String) throws -> Int {
    let digits = key.utf8.first == UInt8(ascii: "-") ? key.utf8.dropFirst() : key.utf8[...]
    let canonical =
        !digits.isEmpty && digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        && (digits.first != UInt8(ascii: "0") || (digits.count == 1 && digits.count == key.utf8.count))
    guard canonical else {
        throw UsageError(
            message: "\(what): key \(jsonString(key)) is not a token id (a decimal integer such as \"5\": no sign "
                + "but '-', no leading zero, no spaces)")
    }
    guard let token = Int(key) else {
        throw UsageError(
            message: "\(what): key \(jsonString(key)) is not a token id: out of range (token ids are 64-bit integers)")
    }
    return token
}

/// A JSON array of token ids (`what` names it); a missing key (nil) is empty.
func jsonTokenList(_ value: Any?, what: String) throws -> [Int] {
    guard let value else { return [] }
    guard let array = value as? [Any] else { throw UsageError(message: "\(what) is not an array of token ids") }
    return try array.enumerated().map { i, element in try jsonTokenID(element, what: "\(what): element \(i)") }
}

import CLZ4

/// LZ4 compression: standard frames for blocks (so `lz4 -d` can read them) and raw blocks for payloads.
package enum LZ4 {
    package struct Failure: Error, CustomStringConvertible {
        package let description: String
    }

    /// Compresses `input` into one LZ4 frame with block and content checksums and the content size in its header.
    package static func compressFrame(_ input: [UInt8]) throws -> [UInt8] {
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled
        // Block checksums cover the compressed bytes themselves: a flipped bit in a match offset that
        // happens to decode to the same content is still reported.
        prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled
        prefs.frameInfo.blockSizeID = LZ4F_max256KB
        prefs.frameInfo.contentSize = UInt64(input.count)
        prefs.compressionLevel = 0
        let bound = LZ4F_compressFrameBound(input.count, &prefs)
        var output = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBytes { src in
            output.withUnsafeMutableBytes { dst in
                LZ4F_compressFrame(dst.baseAddress, bound, src.baseAddress, src.count, &prefs)
            }
        }
        if LZ4F_isError(written) != 0 {
            throw Failure(description: "LZ4 frame compression failed: \(String(cString: LZ4F_getErrorName(written)))")
        }
        output.removeSubrange(written...)
        return output
    }

    /// The most a byte of LZ4 input can stand for: a match's length grows by 255 per extra length
    /// byte, so no block (and no frame) decompresses to more than 255 times its own size.
    package static let maxExpansion = 255

    /// Decompresses one whole LZ4 frame, verifying its checksums; refuses output above `limit` bytes.
    ///
    /// The frame's declared content size is checked before anything is allocated for it: against
    /// `limit`, and against what the frame's own bytes could possibly hold (`maxExpansion`), so a
    /// few crafted bytes that declare gigabytes cost nothing.
    package static func decompressFrame(_ input: [UInt8], limit: Int) throws -> [UInt8] {
        var ctx: OpaquePointer?
        let created = LZ4F_createDecompressionContext(&ctx, UInt32(LZ4F_VERSION))
        guard LZ4F_isError(created) == 0, let ctx else { throw Failure(description: "LZ4 context allocation failed") }
        defer { LZ4F_freeDecompressionContext(ctx) }

        var info = LZ4F_frameInfo_t()
        var consumed = input.count
        let hint = input.withUnsafeBytes { LZ4F_getFrameInfo(ctx, &info, $0.baseAddress, &consumed) }
        if LZ4F_isError(hint) != 0 {
            throw Failure(description: "not an LZ4 frame: \(String(cString: LZ4F_getErrorName(hint)))")
        }
        // Lethe always writes the content size; a frame without one is truncated or foreign.
        guard consumed > 0, info.contentSize > 0 else { throw Failure(description: "truncated LZ4 frame header") }
        guard info.contentSize <= UInt64(max(0, limit)) else {
            throw Failure(description: "LZ4 frame declares \(info.contentSize) bytes, above the \(limit)-byte limit")
        }
        guard info.contentSize <= UInt64(input.count) * UInt64(maxExpansion) else {
            throw Failure(description: "LZ4 frame declares \(info.contentSize) bytes, more than its \(input.count) bytes can hold")
        }
        var output = [UInt8](repeating: 0, count: Int(info.contentSize))
        var inOffset = consumed
        var outOffset = 0
        var done = false
        while !done {
            var srcSize = input.count - inOffset
            var dstSize = output.count - outOffset
            let rc = input.withUnsafeBytes { src in
                output.withUnsafeMutableBytes { dst in
                    LZ4F_decompress(ctx, dst.baseAddress! + outOffset, &dstSize, src.baseAddress! + inOffset, &srcSize, nil)
                }
            }
            if LZ4F_isError(rc) != 0 {
                throw Failure(description: "damaged LZ4 frame: \(String(cString: LZ4F_getErrorName(rc)))")
            }
            inOffset += srcSize
            outOffset += dstSize
            if rc == 0 {
                done = true
            } else if srcSize == 0 && dstSize == 0 {
                throw Failure(description: "truncated LZ4 frame")
            }
        }
        guard inOffset == input.count else { throw Failure(description: "bytes after the end of the LZ4 frame") }
        guard outOffset == output.count else { throw Failure(description: "LZ4 frame shorter than its declared size") }
        return output
    }

    /// Raw LZ4 block compression (no framing); nil when the result would not be smaller.
    package static func compressBlock(_ input: ArraySlice<UInt8>) -> [UInt8]? {
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var output = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBytes { src in
            output.withUnsafeMutableBytes { dst in
                LZ4_compress_default(
                    src.baseAddress?.assumingMemoryBound(to: CChar.self), dst.baseAddress?.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(bound))
            }
        }
        guard written > 0, Int(written) < input.count else { return nil }
        output.removeSubrange(Int(written)...)
        return output
    }

    /// Decompresses a raw LZ4 block whose decompressed size is known exactly.
    package static func decompressBlock(_ input: ArraySlice<UInt8>, size: Int) throws -> [UInt8] {
        // Checked before the output is allocated: a size the input cannot hold is damage.
        guard size >= 0, size <= Int(Int32.max), input.count <= Int(Int32.max), size / maxExpansion <= input.count else {
            throw Failure(description: "damaged LZ4 block (\(size) bytes declared from \(input.count))")
        }
        var output = [UInt8](repeating: 0, count: size)
        let n = input.withUnsafeBytes { src in
            output.withUnsafeMutableBytes { dst in
                LZ4_decompress_safe(
                    src.baseAddress?.assumingMemoryBound(to: CChar.self), dst.baseAddress?.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(size))
            }
        }
        guard Int(n) == size else { throw Failure(description: "damaged LZ4 block") }
        return output
    }
}

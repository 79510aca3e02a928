package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A log file holds frames, one per group commit, each written with one
// write and made durable with one fsync:
//
//	magic   4 bytes "PFYB"
//	length  4 bytes, little endian: the payload's length
//	crc     4 bytes, little endian: CRC-32C of length and payload
//	payload the batch's records, back to back
//
// A crash can tear only the last frame (the next is written after the
// previous fsync returned), so a damaged frame followed by a valid one is
// corruption, and a damaged frame with nothing valid after it is a torn
// write, dropped whole: a batch is kept or lost as a unit.
//
// A record:
//
//	magic   4 bytes "PFYR"
//	length  4 bytes, little endian: the body's length
//	crc     4 bytes, little endian: CRC-32C of length and body
//	body    seq (8 bytes, little endian), then the caller's payload
//
// Records keep their own CRC because they also travel without frames (a
// fleet's journal carries record payloads).
const (
	frameMagic     = "PFYB"
	FrameHeaderLen = 12
	MaxFrameLen    = 1<<31 - 1

	recMagic     = "PFYR"
	RecHeaderLen = 12
	// MaxRecordLen bounds one record's body (a bulk load of about 130
	// million pseudonyms); a caller refuses larger changes before encoding
	// them.
	MaxRecordLen = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors of the decoders; they never quote the bytes found, which may hold
// a pseudonym.
var (
	ErrRecord = errors.New("malformed log record")
	ErrFrame  = errors.New("malformed log frame")
)

// StartFrame appends a frame header to dst, to be completed by EndFrame
// once the records follow it.
func StartFrame(dst []byte) []byte {
	return append(dst, frameMagic+"\x00\x00\x00\x00\x00\x00\x00\x00"...)
}

// EndFrame fills in the header of the frame that starts at dst[start:].
func EndFrame(dst []byte, start int) []byte {
	n := len(dst) - start - FrameHeaderLen
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(n))
	crc := crc32.Update(0, crcTable, dst[start+4:start+8])
	crc = crc32.Update(crc, crcTable, dst[start+FrameHeaderLen:])
	binary.LittleEndian.PutUint32(dst[start+8:], crc)
	return dst
}

// DecodeFrame checks the frame at the start of b and returns its payload
// and total size.
func DecodeFrame(b []byte) (payload []byte, size int, err error) {
	if len(b) < FrameHeaderLen {
		return nil, 0, fmt.Errorf("%w: %d bytes, shorter than a frame header", ErrFrame, len(b))
	}
	if string(b[:4]) != frameMagic {
		return nil, 0, fmt.Errorf("%w: no frame magic", ErrFrame)
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	if n > MaxFrameLen || n > len(b)-FrameHeaderLen {
		return nil, 0, fmt.Errorf("%w: length %d runs past the end (%d bytes left)", ErrFrame, n, len(b)-FrameHeaderLen)
	}
	payload = b[FrameHeaderLen : FrameHeaderLen+n]
	crc := crc32.Update(0, crcTable, b[4:8])
	crc = crc32.Update(crc, crcTable, payload)
	if want := binary.LittleEndian.Uint32(b[8:]); crc != want {
		return nil, 0, fmt.Errorf("%w: checksum %08x, want %08x", ErrFrame, crc, want)
	}
	return payload, FrameHeaderLen + n, nil
}

// validFrameAfter reports whether any valid frame starts at or after off.
func validFrameAfter(b []byte, off int) bool {
	for off < len(b) {
		i := bytes.Index(b[off:], []byte(frameMagic))
		if i < 0 {
			return false
		}
		if _, _, err := DecodeFrame(b[off+i:]); err == nil {
			return true
		}
		off += i + 1
	}
	return false
}

// AppendRecord appends a record with sequence number seq whose payload
// payload appends, and fills in its header.
func AppendRecord(dst []byte, seq uint64, payload func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, recMagic...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // length and crc, below
	body := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = payload(dst)
	n := len(dst) - body
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(n))
	crc := crc32.Update(0, crcTable, dst[start+4:start+8])
	crc = crc32.Update(crc, crcTable, dst[body:])
	binary.LittleEndian.PutUint32(dst[start+8:], crc)
	return dst
}

// DecodeRecord checks the record at the start of b and returns its
// sequence number, its payload (aliasing b) and its total length.
func DecodeRecord(b []byte) (seq uint64, payload []byte, size int, err error) {
	if len(b) < RecHeaderLen {
		return 0, nil, 0, fmt.Errorf("%w: %d bytes, shorter than a record header", ErrRecord, len(b))
	}
	if string(b[:4]) != recMagic {
		return 0, nil, 0, fmt.Errorf("%w: no record magic", ErrRecord)
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if n > MaxRecordLen {
		return 0, nil, 0, fmt.Errorf("%w: length %d is over the limit", ErrRecord, n)
	}
	if len(b)-RecHeaderLen < int(n) {
		return 0, nil, 0, fmt.Errorf("%w: length %d runs past the end (%d bytes left)", ErrRecord, n, len(b)-RecHeaderLen)
	}
	if n < 8 {
		return 0, nil, 0, fmt.Errorf("%w: a body of %d bytes has no sequence number", ErrRecord, n)
	}
	body := b[RecHeaderLen : RecHeaderLen+int(n)]
	crc := crc32.Update(0, crcTable, b[4:8])
	crc = crc32.Update(crc, crcTable, body)
	if want := binary.LittleEndian.Uint32(b[8:]); crc != want {
		return 0, nil, 0, fmt.Errorf("%w: checksum %08x, want %08x", ErrRecord, crc, want)
	}
	return binary.LittleEndian.Uint64(body), body[8:], RecHeaderLen + int(n), nil
}

// IsRecord reports whether b starts with a record's magic.
func IsRecord(b []byte) bool { return len(b) >= len(recMagic) && string(b[:len(recMagic)]) == recMagic }

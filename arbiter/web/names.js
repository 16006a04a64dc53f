// Room names the landing page suggests.

// A suggested room name is a capability: whoever knows it is in the call. 65 random bits from
// the browser's CSPRNG (13 base-32 characters), so names cannot be found by scanning (the server
// also budgets getRoomId misses per address). A name people choose themselves is guessable
// (docs/SECURITY.md, residual risks).
const NAME_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"; // 32 symbols, no l/o/0/1
export function suggestRoomName() {
  const bytes = new Uint8Array(13);
  crypto.getRandomValues(bytes);
  const chars = Array.from(bytes, (b) => NAME_ALPHABET[b & 31]).join("");
  return `${chars.slice(0, 4)}-${chars.slice(4, 8)}-${chars.slice(8)}`;
}

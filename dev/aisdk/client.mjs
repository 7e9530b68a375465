// The AI SDK's own client side of a chat, pointed at our stream route: what a Next.js
// `useChat` does underneath (DefaultChatTransport, then readUIMessageStream).
//   node client.mjs send   <streamUrl> <token> <tripId> <text> <messageId>
//   node client.mjs resume <streamUrl> <token> <tripId>
// Prints one JSON line: the assistant message the SDK assembled ({id, text, data, ...}).
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [mode, api, token, tripId, text, messageId] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api,
  headers: { Authorization: `Bearer ${token}` },
  // Our resume route is the stream route itself (GET), not the SDK's `${api}/${chatId}/stream`.
  prepareReconnectToStreamRequest: () => ({ api }),
});

let stream;
if (mode === "send") {
  stream = await transport.sendMessages({
    chatId: tripId,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    messages: [{ id: messageId, role: "user", parts: [{ type: "text", text }] }],
  });
} else {
  stream = await transport.reconnectToStream({ chatId: tripId });
  if (stream === null) {
    console.log(JSON.stringify({ nothingInFlight: true }));
    process.exit(0);
  }
}

let last;
let error = null;
try {
  for await (const message of readUIMessageStream({ stream, onError: (e) => { error = String(e); } })) {
    last = message;
  }
} catch (e) {
  error = String(e);
}
const parts = last ? last.parts : [];
console.log(
  JSON.stringify({
    id: last?.id ?? null,
    role: last?.role ?? null,
    text: parts.filter((p) => p.type === "text").map((p) => p.text).join(""),
    data: parts.filter((p) => p.type.startsWith("data-")).map((p) => p.data),
    error,
  }),
);

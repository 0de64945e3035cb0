// Minimal repro: does a WebSocket accepted with the Hibernation API receive a close the server
// starts, when the client has never sent a frame? One Durable Object ("Room"), plain JS.
//
//   GET  /ws?room=R              accept a hibernatable socket, send {"type":"hello"}
//   POST /close?room=R&mode=M    close every socket of the room (code 1008) in one of these ways:
//     fetch      ws.close() inside this fetch
//     frame      ws.send({"type":"closing"}) then ws.close(), inside this fetch
//     list       state.getWebSockets() anew, then ws.close()
//     attach     ws.serializeAttachment() touched, then ws.close()
//     timeout    ws.close() from a setTimeout(0) after the fetch answered
//     alarm      ws.close() from alarm() (set for now)
//     event      ws.close() from webSocketMessage, triggered by a second, active socket's frame
//     ping-first the server sends a frame, waits 50 ms, then closes (from the fetch)
import { DurableObject } from "cloudflare:workers";

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    // As the product does: `ping` is answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/ws") {
      const pair = new WebSocketPair();
      // Accepting only after the 101 is returned (so that the runtime's pump starts before the
      // hibernation read loop) is refused by the runtime: "its pair has already been ... used in
      // a Response".
      this.ctx.acceptWebSocket(pair[1], [url.searchParams.get("tag") || "passive"]);
      pair[1].serializeAttachment({ n: 0 });
      pair[1].send(JSON.stringify({ type: "hello" }));
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    if (url.pathname === "/close") {
      const mode = url.searchParams.get("mode");
      const passive = this.ctx.getWebSockets("passive");
      switch (mode) {
        case "fetch":
          for (const ws of passive) ws.close(1008, "bye");
          break;
        case "frame":
          for (const ws of passive) {
            ws.send(JSON.stringify({ type: "closing", code: 1008, reason: "bye" }));
            ws.close(1008, "bye");
          }
          break;
        case "list":
          for (const ws of this.ctx.getWebSockets()) if (passive.includes(ws)) ws.close(1008, "bye");
          break;
        case "attach":
          for (const ws of passive) {
            ws.serializeAttachment({ n: 1 });
            ws.close(1008, "bye");
          }
          break;
        case "timeout":
          setTimeout(() => { for (const ws of this.ctx.getWebSockets("passive")) ws.close(1008, "bye"); }, 0);
          break;
        case "alarm":
          await this.ctx.storage.setAlarm(Date.now());
          break;
        case "ping-first":
          for (const ws of passive) ws.send(JSON.stringify({ type: "closing" }));
          await new Promise((r) => setTimeout(r, 50));
          for (const ws of passive) ws.close(1008, "bye");
          break;
        default:
          return new Response("unknown mode", { status: 400 });
      }
      return new Response(String(passive.length));
    }
    if (url.pathname === "/stats") {
      return Response.json({ closeEvents: this.closeEvents || 0, sockets: this.ctx.getWebSockets().length });
    }
    return new Response("not found", { status: 404 });
  }

  async alarm() {
    for (const ws of this.ctx.getWebSockets("passive")) ws.close(1008, "bye");
  }

  async webSocketMessage(ws, message) {
    if (message === "close-passive") {
      for (const other of this.ctx.getWebSockets("passive")) other.close(1008, "bye");
    }
  }

  async webSocketClose(ws, code, reason) {
    this.closeEvents = (this.closeEvents || 0) + 1; // read by GET /stats
    // Completes the closing handshake for a close the client started.
    try { ws.close(code, reason); } catch (_) {}
  }
}

export default {
  async fetch(request, env) {
    const room = new URL(request.url).searchParams.get("room") || "r";
    return env.ROOM.get(env.ROOM.idFromName(room)).fetch(request);
  },
};

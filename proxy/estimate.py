"""What a billed call cut short probably used, when upstream never said.

Upstream reports a call's usage at its end: in the JSON answer, or in a stream's last event.
A JSON answer is read even when its caller hung up (:mod:`proxy.late_answer`); a stream
left before its last event, a stream that breaks, or a call upstream never answers leave the
sidecar without it, while upstream still bills the prompt it read and the output it
generated. Charging nothing
would let a caller outrun a hard budget and the token limit by reading streams and hanging
up before their last event, so such a call is charged an estimate instead, marked as one
(``Usage.estimated``) wherever it is shown or stored.

The estimate leans high, as a budget should, without needing a tokeniser:

* prompt: one token per three bytes of the JSON request body. Mistral's tokenisers take
  about four bytes of English text or code per token, fewer for other scripts, and the
  body's JSON syntax counts too;
* output: one token per output event relayed (upstream streams about a token per event),
  or one per three characters relayed, whichever is more. Output the caller never received
  (after it hung up, the sidecar stops reading) is not counted: upstream stops generating
  when its connection closes.
"""

from __future__ import annotations

#: Bytes of request body, or characters of output, counted as one token.
BYTES_PER_TOKEN = 3


def estimate_tokens(request_bytes: int, output_events: int, output_chars: int
                    ) -> tuple[int, int]:
    """Prompt and completion tokens of a call whose JSON body had ``request_bytes`` bytes
    and of which ``output_events`` events carrying ``output_chars`` characters of output
    reached the caller."""
    prompt = -(-request_bytes // BYTES_PER_TOKEN)
    completion = max(output_events, -(-output_chars // BYTES_PER_TOKEN))
    return prompt, completion

"""Screen-pop: the manager sees who is calling before picking up.

    tracker facts (AgentRinging/AgentAnswered/AgentEnded)
      -> builder.PopBuilder (a queued reporter: builds the `Pop`, with the client card on
         `ringing`, from the directory in memory and the store within a deadline)
      -> hub.PopHub.publish (fan-out, never waits)
           -> mqtt.MqttPublisher (bounded queue, reconnect loop; dropped while the broker is away)
           -> WebSocket subscribers of the web app (callrouter.web.pops; bounded per connection)

`model` is the payload (pure); `callbacks` decides when a finished call opens or closes a
callback (pure); `calltasks.CallbackKeeper` applies that to the store.
"""
from .model import POP_SCHEMA, Card, Pop

__all__ = ["POP_SCHEMA", "Card", "Pop"]

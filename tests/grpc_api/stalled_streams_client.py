"""A separate client process that opens many SignPdf streams on a few connections, sends only
each stream's header, and stalls. Prints "stalled" once every stream has sent its header or
ended, then, once the server has ended them all, how many ended with each status, as JSON."""

import asyncio
import collections
import json
import sys

import grpc

from signserver.v1 import document_pb2, document_pb2_grpc


class Settled:
    """Counts the streams that have sent their header or already ended; set once all have."""

    def __init__(self, streams: int):
        self._left = streams
        self.all = asyncio.Event()

    def one(self) -> None:
        self._left -= 1
        if self._left == 0:
            self.all.set()


async def stall(stub, header, settled: Settled, never: asyncio.Event) -> str:
    sent = False

    async def requests():
        nonlocal sent
        yield document_pb2.SignPdfRequest(header=header)
        sent = True
        settled.one()
        await never.wait()  # and no more: the stream stalls

    code = await stub.SignPdf(requests(), timeout=600).code()
    if not sent:  # refused before its header went out
        settled.one()
    # When the server's refusal overtakes the header being written, gRPC's client may end the
    # call itself, as CANCELLED or INTERNAL ("Failed execute_batch"): the server's log has the refusal.
    return code.name


async def main() -> None:
    port, ca_file, cert_file, key_file, streams, connections = sys.argv[1:7]
    credentials = grpc.ssl_channel_credentials(open(ca_file, "rb").read(), private_key=open(key_file, "rb").read(),
                                               certificate_chain=open(cert_file, "rb").read())
    header = document_pb2.SignPdfHeader(account="nobody", password="Not-sent-on", credential_id="none")
    channels = [grpc.aio.secure_channel(f"localhost:{port}", credentials,
                                        options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(int(connections))]
    for channel in channels:  # the server's HTTP/2 settings (its stream limit) are known from here on
        await channel.channel_ready()
    stubs = [document_pb2_grpc.DocumentServiceStub(channel) for channel in channels]
    settled, never = Settled(int(streams)), asyncio.Event()
    calls = [asyncio.create_task(stall(stubs[i % len(stubs)], header, settled, never)) for i in range(int(streams))]
    await settled.all.wait()
    print("stalled", flush=True)
    outcomes = collections.Counter(await asyncio.gather(*calls))
    print(json.dumps(outcomes), flush=True)
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main())

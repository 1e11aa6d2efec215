#!/usr/bin/env python3
# HTTP API throughput, one keep-alive connection, 100-byte payloads, from
# Python's http.client (the client, not sluiced, is the bottleneck: these are
# lower bounds). Against a running sluiced:
#
#   bench/http_bench.py PORT single    # one message per POST /messages
#   bench/http_bench.py PORT batch     # 100 per POST /messages/batch
#   bench/http_bench.py PORT consume   # receive 100 + ack 100 until the queue "hb" is empty
port=int(sys.argv[1]); mode=sys.argv[2]
c=http.client.HTTPConnection("127.0.0.1", port)
payload="x"*100
def req(method, path, body):
    c.request(method, path, body, {"Content-Type":"application/json"})
    r=c.getresponse(); data=r.read(); return r.status, data
if mode=="single":
    n=5000; t=time.perf_counter()
    for i in range(n): assert req("POST","/v1/queues/hb/messages",payload)[0]==202
    dt=time.perf_counter()-t; print(f"single publish: {n/dt:.0f} req/s")
elif mode=="batch":
    body=json.dumps({"messages":[{"payload":payload}]*100}); n=500; t=time.perf_counter()
    for i in range(n): assert req("POST","/v1/queues/hb/messages/batch",body)[0]==202
    dt=time.perf_counter()-t; print(f"batch publish (100/request): {n*100/dt:.0f} msg/s")
elif mode=="consume":
    got=0; t=time.perf_counter()
    while True:
        s,d=req("POST","/v1/queues/hb/receive",json.dumps({"max_messages":100}))
        ms=json.loads(d)["messages"]
        if not ms: break
        s,_=req("POST","/v1/queues/hb/ack",json.dumps({"receipts":[m["receipt"] for m in ms]}))
        assert s==200; got+=len(ms)
    dt=time.perf_counter()-t; print(f"receive+ack (100/request): {got/dt:.0f} msg/s ({got} messages)")

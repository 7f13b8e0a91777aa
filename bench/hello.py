"""The ceiling: a bare Tornado handler that parses a JSON POST and answers JSON."""

import asyncio
import json
import sys

import tornado.web


class Hello(tornado.web.RequestHandler):
    def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"hello": "world", "fields": len(body)}))

    def get(self) -> None:
        self.finish({"hello": "world"})


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/", Hello)], log_function=lambda handler: None)
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

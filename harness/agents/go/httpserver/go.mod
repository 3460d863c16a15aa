module connformance/agents/httpserver

go 1.23

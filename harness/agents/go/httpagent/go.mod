module connformance/agents/httpagent

go 1.23

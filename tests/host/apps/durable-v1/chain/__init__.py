import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    names = context.get_input()
    greetings = []
    for name in names:
        greetings.append((yield context.call_activity("greet", name)))
    return greetings


main = df.Orchestrator.create(orchestrator_function)

"""Answers at once with the worker pid."""

import os

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"fast from {os.getpid()}")

// Runs one MLUpdateTask on a .mlmodel and records what Core ML reports, for
// tests/test_coreml_macos.py to compare with our runtime.
//
//   swiftc -O update_probe.swift -o update_probe && ./update_probe request.json answer.json
//
// request.json: {"model": path, "output": feature name,
//                "examples": [{name: feature}], "probes": [{name: feature}],
//                "learning_rates": [[after global mini-batch k, new learning rate], ...]}
// A feature is {"array": {"shape": [...], "values": [...]}}, {"int64": n} or {"string": s}.
// answer.json:  {"events": [{"kind", "epoch", "miniBatch", "loss"}],
//                "after": predictions of `output` for each probe after the task, "error": ...}
// The model is updated on the CPU only, so the numbers do not depend on the GPU or the ANE.

import CoreML
import Foundation

struct ArrayValue: Codable {
    let shape: [Int]
    let values: [Double]
}

struct Feature: Codable {
    let array: ArrayValue?
    let int64: Int64?
    let string: String?
}

struct Request: Codable {
    let model: String
    let output: String
    let examples: [[String: Feature]]
    let probes: [[String: Feature]]
    let learning_rates: [[Double]]?
}

struct Event: Codable {
    let kind: String
    let epoch: Int?
    let miniBatch: Int?
    let loss: Double?
}

struct Answer: Codable {
    var events: [Event] = []
    var after: [[Double]]? = nil
    var error: String? = nil
}

struct ProbeError: Error, CustomStringConvertible {
    let description: String
}

/// Collects events from Core ML's callback queue; the lock makes the hand-over explicit.
final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var answer = Answer()
    private(set) var miniBatches = 0

    func add(_ event: Event) -> Int {
        lock.lock(); defer { lock.unlock() }
        answer.events.append(event)
        if event.kind == "miniBatchEnd" { miniBatches += 1 }
        return miniBatches
    }

    func finish(after: [[Double]]?, error: String?) {
        lock.lock(); defer { lock.unlock() }
        answer.after = after
        answer.error = error
    }
}

func featureValue(_ feature: Feature) throws -> MLFeatureValue {
    if let array = feature.array {
        let value = try MLMultiArray(shape: array.shape.map { NSNumber(value: $0) },
                                     dataType: .float32)
        guard value.count == array.values.count else {
            throw ProbeError(description: "shape \(array.shape) needs \(value.count) values")
        }
        for (offset, number) in array.values.enumerated() {
            value[offset] = NSNumber(value: Float(number))
        }
        return MLFeatureValue(multiArray: value)
    }
    if let number = feature.int64 { return MLFeatureValue(int64: number) }
    if let text = feature.string { return MLFeatureValue(string: text) }
    throw ProbeError(description: "a feature needs array, int64 or string")
}

func provider(_ row: [String: Feature]) throws -> MLFeatureProvider {
    var values: [String: MLFeatureValue] = [:]
    for (name, feature) in row { values[name] = try featureValue(feature) }
    return try MLDictionaryFeatureProvider(dictionary: values)
}

/// All elements of `array` in row-major order of its logical shape (strides may be padded).
func flatten(_ array: MLMultiArray) -> [Double] {
    let shape = array.shape.map { $0.intValue }
    var index = [Int](repeating: 0, count: shape.count)
    var values: [Double] = []
    for _ in 0..<shape.reduce(1, *) {
        values.append(array[index.map { NSNumber(value: $0) }].doubleValue)
        var axis = shape.count - 1
        while axis >= 0 {
            index[axis] += 1
            if index[axis] < shape[axis] { break }
            index[axis] = 0
            axis -= 1
        }
    }
    return values
}

func predictions(_ model: MLModel, _ probes: [MLFeatureProvider], _ output: String) throws -> [[Double]] {
    return try probes.map { probe in
        let result = try model.prediction(from: probe)
        guard let array = result.featureValue(for: output)?.multiArrayValue else {
            throw ProbeError(description: "the model has no MultiArray output \(output)")
        }
        return flatten(array)
    }
}

func eventName(_ event: MLUpdateProgressEvent) -> String {
    if event == .trainingBegin { return "trainingBegin" }
    if event == .miniBatchEnd { return "miniBatchEnd" }
    if event == .epochEnd { return "epochEnd" }
    return "event\(event.rawValue)"
}

func run() throws {
    let arguments = CommandLine.arguments
    guard arguments.count == 3 else {
        throw ProbeError(description: "usage: update_probe request.json answer.json")
    }
    let data = try Data(contentsOf: URL(fileURLWithPath: arguments[1]))
    let request = try JSONDecoder().decode(Request.self, from: data)
    let compiled = try MLModel.compileModel(at: URL(fileURLWithPath: request.model))
    let training = MLArrayBatchProvider(array: try request.examples.map(provider))
    let probes = try request.probes.map(provider)
    var rates: [Int: Double] = [:]
    for pair in request.learning_rates ?? [] where pair.count == 2 {
        rates[Int(pair[0])] = pair[1]
    }
    let schedule = rates
    let recorder = Recorder()
    let done = DispatchSemaphore(value: 0)
    let handlers = MLUpdateProgressHandlers(
        forEvents: [.trainingBegin, .miniBatchEnd, .epochEnd],
        progressHandler: { context in
            let metrics = context.metrics
            let event = Event(kind: eventName(context.event),
                              epoch: (metrics[.epochIndex] as? NSNumber)?.intValue,
                              miniBatch: (metrics[.miniBatchIndex] as? NSNumber)?.intValue,
                              loss: (metrics[.lossValue] as? NSNumber)?.doubleValue)
            let miniBatches = recorder.add(event)
            if event.kind == "miniBatchEnd", let rate = schedule[miniBatches] {
                context.task.resume(withParameters: [.learningRate: rate])
            }
        },
        completionHandler: { context in
            var failure = context.task.error.map { "\($0)" }
            var after: [[Double]]? = nil
            do {
                after = try predictions(context.model, probes, request.output)
            } catch {
                failure = (failure.map { $0 + "; " } ?? "") + "prediction after update: \(error)"
            }
            recorder.finish(after: after, error: failure)
            done.signal()
        })
    let configuration = MLModelConfiguration()
    configuration.computeUnits = .cpuOnly
    let task = try MLUpdateTask(forModelAt: compiled, trainingData: training,
                                configuration: configuration, progressHandlers: handlers)
    task.resume()
    done.wait()
    let encoded = try JSONEncoder().encode(recorder.answer)
    try encoded.write(to: URL(fileURLWithPath: arguments[2]), options: .atomic)
}

do {
    try run()
} catch {
    FileHandle.standardError.write("update_probe: \(error)\n".data(using: .utf8)!)
    exit(1)
}
